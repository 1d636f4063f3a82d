"""The engine's Python API: `LLM(model_dir).generate(prompts, SamplingParams(...))`."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence, Union

import torch

from .chat_template import ChatTemplate
from .device import select_device
from .engine_config import EngineConfig
from .engine_core import EngineCore
from .outputs import RankInfo
from .parallel import Parallel
from .request import CompletionOutput, ContinuationScore, Request, RequestOutput
from .sampling import SamplingParams
from .tokenizer import Tokenizer
from .warmup import run as run_warmup

Prompt = Union[str, Sequence[int]]


class LLM:
    """A model loaded for generation: `LLM(model, **options)`.

    model: a directory with an HF-style checkpoint (config.json, *.safetensors, tokenizer.json).
    options: the engine options, each declared (with its help, default and range) in EngineConfig
    (engine/engine_config.py). Under tensor_parallel_size x pipeline_parallel_size > 1 every rank
    of a job started by `trtx launch -n N` constructs the LLM and calls generate with the same
    prompts, and every rank gets the outputs. An unknown option is a TypeError; a bad value or
    layout a ConfigError, before anything loads.
    """

    def __init__(self, model: str | Path, **options):
        self._start(EngineConfig.from_kwargs(model, **options))

    @classmethod
    def from_config(cls, config: EngineConfig) -> "LLM":
        """An LLM for a configuration built (and checked) elsewhere, e.g. sent to a rank as data."""
        llm = cls.__new__(cls)
        llm._start(config)
        return llm

    def _start(self, config: EngineConfig) -> None:
        self.config, self.model_config = config, config.model_config
        self.tokenizer = Tokenizer.from_dir(Path(config.model))
        choose = (lambda _local_rank: torch.device(config.device)) if config.device is not None else select_device
        tp, pp = config.tensor_parallel_size, config.pipeline_parallel_size
        if config.world_size > 1:
            self.parallel = Parallel.init(tp, pp, choose, config.attention_dp)
        else:
            self.parallel = Parallel.single(choose(0))
        self.device = self.parallel.device
        self.engine = EngineCore(config, self.parallel, self.tokenizer)
        self.warmup_report = run_warmup(self.engine.runner, config, self.parallel) if config.warmup else []
        self._ids = itertools.count()

    def generate(self, prompts: Prompt | Sequence[Prompt],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[RequestOutput]:
        """Generate for every prompt (text, or a list of token ids); outputs come in prompt order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params = sampling_params or SamplingParams()
        params = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} sampling params")

        requests = [Request(next(self._ids), self._token_ids(p), sp) for p, sp in zip(prompts, params)]
        self._run(requests)
        return [self._output(r) for r in requests]

    def score(self, pairs: Sequence[tuple[Prompt, Prompt]]) -> list[ContinuationScore]:
        """The log-likelihood of each continuation after its context (text or token ids; a text
        continuation is encoded without special tokens): every continuation token's
        log-probability given everything before it, and whether greedy decoding would have
        chosen it. Scores come in pair order, on every rank.

        Pairs with the same context share its prefill: the first computes the context and keeps
        its whole cache blocks for the others, which fork them (BlockManager.fork) and compute
        only the rest, from the last context block on. Contexts are kept a wave at a time: the
        blocks kept, plus the most any request of the wave needs, fit the cache (the smallest
        of every rank's), so every request can always run."""
        ids = [self._pair_ids(i, context, continuation) for i, (context, continuation) in enumerate(pairs)]
        if not ids:
            return []
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (context, _) in enumerate(ids):
            groups.setdefault(tuple(context), []).append(i)
        blocks = self.engine.blocks
        capacity = self.parallel.agree_min(blocks.num_blocks) - 1      # attention DP: every rank cuts alike
        requests: list[Request] = [None] * len(ids)      # type: ignore[list-item]
        wave, kept, most = [], 0, 0
        for context, members in groups.items():
            # Whole blocks only, and the last context token recomputed: its logits score the
            # continuation's first token.
            shared = (len(context) - 1) // blocks.block_size * blocks.block_size if len(members) > 1 else 0
            need = max(blocks.blocks_for(len(context) + len(ids[i][1]) + 1) for i in members)
            if wave and kept + shared // blocks.block_size + max(most, need) > capacity:
                self._score_wave(wave, ids, requests)
                wave, kept, most = [], 0, 0
            wave.append((members, shared))
            kept, most = kept + shared // blocks.block_size, max(most, need)
        self._score_wave(wave, ids, requests)
        scores = [torch.cat(r.prompt_scores) if r.prompt_scores else torch.zeros(0, 2) for r in requests]
        if self.parallel.mapping.pp_size > 1:       # scores exist on the last stage, which computes logits
            flat = torch.cat(scores).to(self.device) if self.parallel.mapping.is_last_stage else \
                torch.zeros(sum(len(x) for _, x in ids), 2, device=self.device)
            scores = self.parallel.broadcast_from_last_stage(flat).split([len(x) for _, x in ids])
        return [ContinuationScore(*_score_lists(s)) for s in scores]

    def _pair_ids(self, i: int, context: Prompt, continuation: Prompt) -> tuple[list[int], list[int]]:
        """A pair as token ids, checked before any request starts: both parts, and room for them."""
        tokens = self._token_ids(context), self._token_ids(continuation, add_special_tokens=False)
        if not all(tokens):
            raise ValueError(f"pair {i}: the context and the continuation each need at least one token")
        cfg, length = self.model_config, len(tokens[0]) + len(tokens[1])
        if length >= cfg.max_position_embeddings:
            raise ValueError(f"pair {i}: {length} tokens leave no room to generate (max_position_embeddings "
                             f"{cfg.max_position_embeddings})")
        bad = [t for part in tokens for t in part if not 0 <= t < cfg.vocab_size]
        if bad:
            raise ValueError(f"pair {i}: token id {bad[0]} outside the vocabulary (size {cfg.vocab_size})")
        return tokens

    def _score_wave(self, wave: list[tuple[list[int], int]], ids, requests: list) -> None:
        """First each group's first pair (keeping its shared blocks) and the groups that share
        nothing, then the rest of each group, forking the kept blocks; then free them."""
        def request(i: int, keep: int = 0, prefix: tuple[int, int] | None = None) -> Request:
            context, continuation = ids[i]
            req = Request(next(self._ids), context + continuation,
                          SamplingParams(max_tokens=1, prompt_logprobs_from=len(context)),
                          cached_prefix=prefix, keep_cache_tokens=keep)
            requests[i] = req
            return req
        first = [request(i, shared if shared and j == 0 else 0)
                 for members, shared in wave for j, i in enumerate(members) if j == 0 or not shared]
        self._run(first)
        rest = [request(i, prefix=(requests[members[0]].request_id, shared))
                for members, shared in wave if shared for i in members[1:]]
        self._run(rest)
        self.engine.release([requests[members[0]].request_id for members, shared in wave if shared])

    def _run(self, requests: list[Request]) -> None:
        for req in requests:
            self.engine.add_request(req)
        while self.engine.has_unfinished():
            self.engine.step()

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """The token ids of a conversation ([{"role": ..., "content": ...}, ...]) rendered by the
        checkpoint's chat template, as transformers' apply_chat_template(messages,
        add_generation_prompt=...) gives them (engine/chat_template.py)."""
        template = ChatTemplate.from_dir(self.config.model)      # read when asked for: most runs never are
        if template is None:
            raise ValueError(f"{self.config.model} has no chat template (tokenizer_config.json's chat_template, "
                             f"or chat_template.jinja)")
        if self.tokenizer is None:
            raise ValueError("chat templates need a tokenizer.json in the checkpoint directory")
        return self.tokenizer.encode(template.render(messages, add_generation_prompt), add_special_tokens=False)

    def rank_info(self) -> RankInfo:
        """What this rank holds and did (see RankInfo)."""
        m, engine, runner = self.parallel.mapping, self.engine, self.engine.runner
        modules = [runner.model] + ([runner.mtp] if runner.mtp is not None else [])
        stats = engine.dp.iteration_stats if engine.dp is not None else []
        own = [s for s in stats if s.rank == m.rank]
        return RankInfo(
            rank=m.rank, tp_rank=m.tp_rank, pp_rank=m.pp_rank, layers=list(runner.model.layer_ids),
            mtp_module=runner.mtp is not None, tensors=runner.loaded_tensors,
            parameter_bytes=sum(p.numel() * p.element_size() for mod in modules for p in mod.parameters()),
            requests_served=engine.num_served, iterations=len(own),
            idle_iterations=[s.iteration for s in own if s.requests == 0],
            stats_from_ranks=sorted({s.rank for s in stats}), warmup=[list(item) for item in self.warmup_report],
            graphs=sorted(runner.graphs.graphs) if runner.graphs else [], forwards=dict(runner.forwards),
            graph_memory=runner.graph_memory())

    def shutdown(self) -> None:
        """Leave the multi-rank job (a no-op on one rank)."""
        self.parallel.shutdown()

    def _token_ids(self, prompt: Prompt, add_special_tokens: bool = True) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("text prompts need a tokenizer.json in the checkpoint directory; "
                                 "pass token ids instead")
            return self.tokenizer.encode(prompt, add_special_tokens)
        return [int(t) for t in prompt]

    def _output(self, req: Request) -> RequestOutput:
        text = self.tokenizer.decode(req.output_token_ids) if self.tokenizer else ""
        if req.stop_text_end is not None:
            text = text[:req.stop_text_end]
        # Context logits exist where the logits are computed: on the last pipeline stage.
        ctx = torch.cat(req.context_logits) if req.context_logits else None
        out = RequestOutput(req.request_id, req.prompt_token_ids,
                            [CompletionOutput(0, list(req.output_token_ids), text, req.finish_reason)], ctx,
                            spec=req.spec if self.config.mtp_nextn else None)
        if req.prompt_scores:           # on the last pipeline stage, like the context logits
            out.prompt_logprobs, out.prompt_greedy = _score_lists(torch.cat(req.prompt_scores))
        return out


def _score_lists(scores: torch.Tensor) -> tuple[list[float], list[bool]]:
    """[n, 2] (log-probability, greedy) scores as two lists."""
    scores = scores.cpu()
    return scores[:, 0].tolist(), [bool(g) for g in scores[:, 1].tolist()]
