"""The engine core: one step = schedule, prepare, forward, sample (or verify drafts), update
request state, and with MTP, draft the next step's tokens.

It owns the model, the KV cache, the scheduler, the model runner and the MTP drafter for one
rank. `LLM` drives it until every request has finished.
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
from .mtp import DraftJob, MtpDrafter, MtpModule
from .request import Request
from .scheduler import Scheduler
from .speculative import verify
from .tokenizer import Tokenizer


class EngineCore:
    def __init__(self, model_dir: Path, cfg: ModelConfig, device: torch.device, tokenizer: Tokenizer | None, *,
                 max_num_seqs: int, max_num_tokens: int, block_size: int,
                 num_kv_blocks: int | None, kv_cache_memory: int | None, mtp_nextn: int = 0):
        self.cfg, self.device, self.tokenizer, self.mtp_nextn = cfg, device, tokenizer, mtp_nextn
        self.max_model_len = cfg.max_position_embeddings
        L = cfg.num_hidden_layers
        if mtp_nextn and cfg.num_nextn_predict_layers != 1:
            raise ValueError(f"mtp_nextn={mtp_nextn} needs a checkpoint with one MTP module "
                             f"(num_nextn_predict_layers=1 in config.json); this one has {cfg.num_nextn_predict_layers}")
        with torch.device(device):
            self.model = LlamaForCausalLM(cfg).eval()
            mtp = MtpModule(cfg).eval() if mtp_nextn else None
        # MTP modules (layers past num_hidden_layers) are not part of the base model: loaded apart
        # when drafting, skipped otherwise (invariant 1).
        targets = self.model.weight_targets()
        if mtp is not None:
            targets.update(mtp.weight_targets(f"model.layers.{L}."))
        load_weights(targets, model_dir, optional={"lm_head.weight"} if cfg.tie_word_embeddings else set(),
                     skip=_layer_at_or_after(L) if cfg.num_nextn_predict_layers else None)
        num_cache_layers = L + (1 if mtp is not None else 0)

        if num_kv_blocks is None:
            per_block = kv_bytes_per_block(num_cache_layers, block_size, cfg.num_key_value_heads,
                                           cfg.head_dim, cfg.dtype)
            budget = kv_cache_memory if kv_cache_memory is not None else default_kv_cache_bytes(device)
            useful = max_num_seqs * -(-self.max_model_len // block_size)   # more could never be used
            num_kv_blocks = min(budget // per_block, useful) + 1
        self.blocks = BlockManager(num_kv_blocks, block_size)
        kv = allocate_kv_cache(num_cache_layers, num_kv_blocks, block_size, cfg.num_key_value_heads,
                               cfg.head_dim, cfg.dtype, device)
        self.runner = ModelRunner(self.model, kv[:L], self.blocks, device, cfg.sliding_window)
        # The MTP module's cache shares the block tables: its entry at position i sits where the
        # target's does, in a tensor of its own.
        self.drafter = MtpDrafter(mtp, kv[L], self.model, self.runner) if mtp is not None else None
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

        # Rows whose logits pick tokens: the last known token of each request whose known tokens
        # are all in the cache after this step, then one row per draft riding behind it.
        sampling, jobs = [], []
        for req, n, last in zip(batch.requests, batch.num_tokens, inputs.last_index):
            first_row, start = last - n + 1, req.num_computed_tokens
            known = n - len(req.draft_token_ids)
            if req.params.return_context_logits:
                self._collect_context_logits(req, known, first_row + known - 1, hidden)
            req.num_computed_tokens += known
            if req.num_computed_tokens == req.num_tokens:
                sampling.append((req, list(range(first_row + known - 1, last + 1)), first_row, start))
            else:
                jobs.append((req, first_row, start))           # a prefill chunk: the MTP still catches up
        finished = []
        if sampling:
            logits = self.runner.logits(hidden, [row for _, rows, _, _ in sampling for row in rows])
            offset = 0
            for req, rows, first_row, start in sampling:
                drafts, probs = req.draft_token_ids, req.draft_probs
                new, accepted = verify(logits[offset:offset + len(rows)], drafts,
                                       torch.stack(probs) if drafts and probs[0] is not None else None,
                                       req.params, req.generator)
                offset += len(rows)
                req.spec.record(len(drafts), accepted)
                req.num_computed_tokens += accepted            # rejected drafts' cache entries roll back
                req.keep_drafts(0)
                if self._append(req, new):
                    finished.append(req)
                else:
                    jobs.append((req, first_row, start))
        if self.drafter is not None:
            self.drafter.run([self._draft_job(*job) for job in jobs], hidden)
        return finished

    def _append(self, req: Request, tokens: list[int]) -> bool:
        """Append the step's new tokens one by one; True when the request finished (tokens after
        the one that finished it are dropped)."""
        for token in tokens:
            req.output_token_ids.append(token)
            reason = self._finish_reason(req, token)
            if reason:
                self.scheduler.finish(req, reason)
                return True
        return False

    def _draft_job(self, req: Request, first_row: int, start: int) -> DraftJob:
        """The MTP catch-up range of a request this step computed, and how many drafts to propose:
        no more than can be used before max_tokens or the model length."""
        end = min(req.num_computed_tokens, req.num_tokens - 1)   # positions whose next token is known
        rows = list(range(first_row + req.num_mtp_computed - start, first_row + end - start))
        drafts = 0
        if req.num_computed_tokens == req.num_tokens - 1:          # decoding: draft for the next step
            drafts = min(self.mtp_nextn, req.params.max_tokens - len(req.output_token_ids) - 1,
                         self.max_model_len - req.num_tokens)
            # Drafting writes the MTP cache up to position end + drafts - 2; the target's blocks
            # may not reach that far after a short acceptance.
            while drafts > 0 and not self.blocks.allocate(req.request_id, end + drafts - 1):
                drafts -= 1
        return DraftJob(req, req.num_mtp_computed, end, rows, max(drafts, 0))

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
