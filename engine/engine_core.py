"""The engine core: one step = schedule, prepare, forward, sample, update request state.

It owns the model, the KV cache, the scheduler and the model runner for one rank. `LLM` drives it
until every request has finished.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from .checkpoint import load_weights
from .config import ModelConfig
from .device import default_kv_cache_bytes
from .kv_cache import BlockManager, allocate_kv_cache, kv_bytes_per_block
from .model import LlamaForCausalLM
from .model_runner import ModelRunner
from .request import Request
from .sampling import sample
from .scheduler import Scheduler
from .tokenizer import Tokenizer


class EngineCore:
    def __init__(self, model_dir: Path, cfg: ModelConfig, device: torch.device, tokenizer: Tokenizer | None, *,
                 max_num_seqs: int, max_num_tokens: int, block_size: int,
                 num_kv_blocks: int | None, kv_cache_memory: int | None):
        self.cfg, self.device, self.tokenizer = cfg, device, tokenizer
        self.max_model_len = cfg.max_position_embeddings
        with torch.device(device):
            self.model = LlamaForCausalLM(cfg).eval()
        # MTP modules (layers past num_hidden_layers) are not part of the base model.
        skip = _layer_at_or_after(cfg.num_hidden_layers) if cfg.num_nextn_predict_layers else None
        load_weights(self.model.weight_targets(), model_dir,
                     optional={"lm_head.weight"} if cfg.tie_word_embeddings else set(), skip=skip)

        if num_kv_blocks is None:
            per_block = kv_bytes_per_block(cfg.num_hidden_layers, block_size, cfg.num_key_value_heads,
                                           cfg.head_dim, cfg.dtype)
            budget = kv_cache_memory if kv_cache_memory is not None else default_kv_cache_bytes(device)
            useful = max_num_seqs * -(-self.max_model_len // block_size)   # more could never be used
            num_kv_blocks = min(budget // per_block, useful) + 1
        self.blocks = BlockManager(num_kv_blocks, block_size)
        kv = allocate_kv_cache(cfg.num_hidden_layers, num_kv_blocks, block_size, cfg.num_key_value_heads,
                               cfg.head_dim, cfg.dtype, device)
        self.runner = ModelRunner(self.model, kv, self.blocks, device, cfg.sliding_window)
        self.scheduler = Scheduler(self.blocks, max_num_seqs, max_num_tokens, self.max_model_len)
        self.num_steps = 0

    def add_request(self, req: Request) -> None:
        if not req.prompt_token_ids:
            raise ValueError(f"request {req.request_id}: empty prompt")
        bad = [t for t in req.prompt_token_ids if not 0 <= t < self.cfg.vocab_size]
        if bad:
            raise ValueError(f"request {req.request_id}: token id {bad[0]} outside the vocabulary "
                             f"(size {self.cfg.vocab_size})")
        if len(req.prompt_token_ids) >= self.max_model_len:
            raise ValueError(f"request {req.request_id}: prompt of {len(req.prompt_token_ids)} tokens leaves no "
                             f"room to generate (max_position_embeddings {self.max_model_len})")
        if req.params.stop and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer.json in the checkpoint directory")
        if req.params.seed is not None:
            req.generator = torch.Generator(device=self.device).manual_seed(req.params.seed)
        self.scheduler.add(req)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def step(self) -> list[Request]:
        """Run one forward over the scheduled batch; returns the requests that finished."""
        batch = self.scheduler.schedule()
        if not batch:
            raise RuntimeError("scheduler produced an empty batch with requests pending (KV cache too small?)")
        self.num_steps += 1
        inputs = self.runner.prepare(self.runner.chunks(batch))
        hidden = self.runner.forward(inputs)

        sampled_rows, sampled_reqs = [], []
        for req, n, last in zip(batch.requests, batch.num_tokens, inputs.last_index):
            if req.params.return_context_logits:
                self._collect_context_logits(req, n, last, hidden)
            req.num_computed_tokens += n
            if req.num_computed_tokens == req.num_tokens:   # all known tokens are in: time for a new one
                sampled_rows.append(last)
                sampled_reqs.append(req)
        if not sampled_reqs:
            return []
        logits = self.runner.logits(hidden, sampled_rows)
        tokens = sample(logits, [r.params for r in sampled_reqs], [r.generator for r in sampled_reqs])

        finished = []
        for req, token in zip(sampled_reqs, tokens):
            req.output_token_ids.append(token)
            reason = self._finish_reason(req, token)
            if reason:
                self.scheduler.finish(req, reason)
                finished.append(req)
        return finished

    def _collect_context_logits(self, req: Request, n: int, last: int, hidden: torch.Tensor) -> None:
        start = req.num_computed_tokens
        lo = max(start, req.num_context_logits)          # a recomputed prefix was collected already
        hi = min(start + n, len(req.prompt_token_ids))
        if lo < hi:
            first = last - n + 1 - start                 # flat row of position 0
            req.context_logits.append(self.runner.logits(hidden, slice(first + lo, first + hi)).cpu())

    def _finish_reason(self, req: Request, token: int) -> str | None:
        p = req.params
        if not p.ignore_eos and token in self.cfg.eos_token_ids:
            return "stop"
        if p.stop:
            text = self.tokenizer.decode(req.output_token_ids)
            hits = [i for i in (text.find(s) for s in p.stop) if i >= 0]
            if hits:
                req.stop_text_end = min(hits)
                return "stop"
        if len(req.output_token_ids) >= p.max_tokens or req.num_tokens >= self.max_model_len:
            return "length"
        return None


def _layer_at_or_after(first: int):
    """A predicate on checkpoint names: true for decoder layers with index >= first."""
    pattern = re.compile(r"model\.layers\.(\d+)\.")

    def match(name: str) -> bool:
        m = pattern.match(name)
        return m is not None and int(m.group(1)) >= first
    return match
