"""The engine's Python API: `LLM(model_dir).generate(prompts, SamplingParams(...))`."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence, Union

import torch

from .device import select_device
from .engine_config import EngineConfig
from .engine_core import EngineCore
from .outputs import RankInfo
from .parallel import Parallel
from .request import CompletionOutput, Request, RequestOutput
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
        for req in requests:
            self.engine.add_request(req)
        while self.engine.has_unfinished():
            self.engine.step()
        return [self._output(r) for r in requests]

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

    def _token_ids(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("text prompts need a tokenizer.json in the checkpoint directory; "
                                 "pass token ids instead")
            return self.tokenizer.encode(prompt)
        return [int(t) for t in prompt]

    def _output(self, req: Request) -> RequestOutput:
        text = self.tokenizer.decode(req.output_token_ids) if self.tokenizer else ""
        if req.stop_text_end is not None:
            text = text[:req.stop_text_end]
        # Context logits exist where the logits are computed: on the last pipeline stage.
        ctx = torch.cat(req.context_logits) if req.context_logits else None
        return RequestOutput(req.request_id, req.prompt_token_ids,
                             [CompletionOutput(0, list(req.output_token_ids), text, req.finish_reason)], ctx,
                             spec=req.spec if self.config.mtp_nextn else None)
