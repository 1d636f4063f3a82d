"""The engine's Python API: `LLM(model_dir).generate(prompts, SamplingParams(...))`."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence, Union

import torch

from .config import ModelConfig, parse_dtype
from .device import select_device
from .engine_core import EngineCore
from .errors import ConfigError
from .parallel import Parallel, check_layout
from .request import CompletionOutput, Request, RequestOutput
from .sampling import SamplingParams
from .tokenizer import Tokenizer
from .warmup import run as run_warmup

Prompt = Union[str, Sequence[int]]


class LLM:
    """A model loaded for generation.

    model: a directory with an HF-style checkpoint (config.json, *.safetensors, tokenizer.json).
    dtype: "auto" (the checkpoint's torch_dtype) or float32 / bfloat16 / float16.
    tensor_parallel_size / pipeline_parallel_size: split the model across tp x pp ranks; every rank
    of the job (started by `trtx launch -n N`) constructs the LLM and calls generate with the same
    prompts, and every rank gets the outputs.
    enable_attention_dp: with tensor_parallel_size N, run attention data-parallel on the N ranks
    (each owns the requests routed to it, with its own KV cache) and the MLP tensor-parallel.
    gather_iteration_stats: under attention DP, collect every rank's per-iteration statistics on
    every rank (`llm.engine.iteration_stats`); otherwise each rank keeps its own.
    warmup: before serving, run every batch shape once (engine/warmup.py): the ranks agree on
    the shapes and on skipping one that does not fit on some rank (on_warmup_oom="skip"), or all
    stop with one error ("stop"). warmup_memory_budget: bytes a shape may use (default: free memory).
    decode_graphs: capture each warmed-up decode batch size as a graph and replay decode steps
    with padding (engine/graphs.py; implies warmup, pp 1 only). On CUDA these are CUDA graphs; on
    CPU the same padded static buffers run eagerly (slower: for testing the path, not for speed).
    mtp_nextn: draft this many tokens per step with the checkpoint's MTP module and verify them in
    one target forward (0: no speculation). Outputs then carry acceptance counts (`.spec`).
    max_num_seqs / max_num_tokens: the scheduler's per-step caps on requests and tokens.
    num_kv_blocks / kv_cache_memory: the KV cache size in blocks, or in bytes (default: a share
    of free memory, see engine/device.py).
    """

    def __init__(self, model: str | Path, tensor_parallel_size: int = 1, pipeline_parallel_size: int = 1,
                 enable_attention_dp: bool = False, mtp_nextn: int = 0, *, dtype: str | torch.dtype = "auto",
                 max_num_seqs: int = 64, max_num_tokens: int = 2048, block_size: int = 16,
                 num_kv_blocks: int | None = None, kv_cache_memory: int | None = None,
                 device: str | torch.device | None = None, gather_iteration_stats: bool = False,
                 warmup: bool = False, on_warmup_oom: str = "skip", warmup_memory_budget: int | None = None,
                 decode_graphs: bool = False):
        if not 0 <= mtp_nextn <= 8:
            raise ConfigError(f"mtp_nextn must be between 0 and 8, got {mtp_nextn}")
        model_dir = Path(model)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"model directory {model_dir} does not exist")
        cfg = ModelConfig.from_dir(model_dir)
        if dtype != "auto":
            cfg.dtype = parse_dtype(dtype)
        self.config = cfg
        self.tokenizer = Tokenizer.from_dir(model_dir)
        choose = (lambda _local_rank: torch.device(device)) if device is not None else select_device
        adp = enable_attention_dp and tensor_parallel_size > 1
        check_layout(cfg, tensor_parallel_size, pipeline_parallel_size, adp)
        if tensor_parallel_size * pipeline_parallel_size > 1:
            self.parallel = Parallel.init(tensor_parallel_size, pipeline_parallel_size, choose, adp)
        else:
            self.parallel = Parallel.single(choose(0))
        self.device = self.parallel.device
        self.engine = EngineCore(model_dir, cfg, self.parallel, self.tokenizer,
                                 max_num_seqs=max_num_seqs, max_num_tokens=max_num_tokens, block_size=block_size,
                                 num_kv_blocks=num_kv_blocks, kv_cache_memory=kv_cache_memory, mtp_nextn=mtp_nextn,
                                 gather_iteration_stats=gather_iteration_stats)
        if decode_graphs:
            self.engine.enable_graphs()
        warmup = warmup or decode_graphs          # graphs are captured during warmup
        self.warmup_report = run_warmup(self.engine, on_warmup_oom, warmup_memory_budget) if warmup else []
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

    def rank_info(self) -> dict:
        """What this rank holds and did: its place in the job, its decoder layers, whether it
        holds the MTP module, the checkpoint tensors it loaded, its parameter bytes."""
        m, engine = self.parallel.mapping, self.engine
        modules = [engine.model] + ([engine.drafter.module] if engine.drafter else [])
        own = [s for s in engine.iteration_stats if s["rank"] == m.rank]
        return {"rank": m.rank, "tp_rank": m.tp_rank, "pp_rank": m.pp_rank, "layers": list(engine.model.layer_ids),
                "mtp_module": engine.drafter is not None, "tensors": engine.loaded_tensors,
                "parameter_bytes": sum(p.numel() * p.element_size() for mod in modules for p in mod.parameters()),
                # attention DP: requests this rank served, its iterations (idle ones: a dummy
                # forward), and whose iteration statistics reached it
                "requests_served": engine.num_served, "iterations": len(own),
                "idle_iterations": [s["iteration"] for s in own if s["requests"] == 0],
                "stats_from_ranks": sorted({s["rank"] for s in engine.iteration_stats}),
                "warmup": [list(item) for item in self.warmup_report],
                # decode graphs: the sizes captured, and this rank's forwards by kind ("eager",
                # "graph-N": replayed padded to N); under attention DP the same on every rank
                "graphs": sorted(engine.graphs.graphs) if engine.graphs else [], "forwards": dict(engine.forwards)}

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
                             spec=req.spec if self.engine.mtp_nextn else None)
