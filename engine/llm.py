"""The engine's Python API: `LLM(model_dir).generate(prompts, SamplingParams(...))`."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence, Union

import torch

from .config import ModelConfig, parse_dtype
from .device import select_device
from .engine_core import EngineCore
from .request import CompletionOutput, Request, RequestOutput
from .sampling import SamplingParams
from .tokenizer import Tokenizer

Prompt = Union[str, Sequence[int]]


class LLM:
    """A model loaded for generation.

    model: a directory with an HF-style checkpoint (config.json, *.safetensors, tokenizer.json).
    dtype: "auto" (the checkpoint's torch_dtype) or float32 / bfloat16 / float16.
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
                 device: str | torch.device | None = None):
        if tensor_parallel_size != 1 or pipeline_parallel_size != 1 or enable_attention_dp:
            raise NotImplementedError("multi-rank parallelism (tp/pp/attention dp) is not available yet; "
                                      "this engine runs on a single rank")
        if not 0 <= mtp_nextn <= 8:
            raise ValueError(f"mtp_nextn must be between 0 and 8, got {mtp_nextn}")
        model_dir = Path(model)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"model directory {model_dir} does not exist")
        cfg = ModelConfig.from_dir(model_dir)
        if dtype != "auto":
            cfg.dtype = parse_dtype(dtype)
        self.config = cfg
        self.tokenizer = Tokenizer.from_dir(model_dir)
        self.device = torch.device(device) if device is not None else select_device()
        self.engine = EngineCore(model_dir, cfg, self.device, self.tokenizer,
                                 max_num_seqs=max_num_seqs, max_num_tokens=max_num_tokens, block_size=block_size,
                                 num_kv_blocks=num_kv_blocks, kv_cache_memory=kv_cache_memory, mtp_nextn=mtp_nextn)
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
        ctx = torch.cat(req.context_logits) if req.params.return_context_logits else None
        return RequestOutput(req.request_id, req.prompt_token_ids,
                             [CompletionOutput(0, list(req.output_token_ids), text, req.finish_reason)], ctx,
                             spec=req.spec if self.engine.drafter is not None else None)
