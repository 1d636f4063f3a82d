"""Continuous batching: which requests run this step, and how many of their tokens.

Each step has a token budget (max_num_tokens) and a request cap (max_num_seqs). Running requests
go first (one token each when decoding, plus its MTP drafts to verify; a chunk when the prompt
is still being prefilled), then waiting requests are admitted in arrival order while the budget
lasts and the block manager has blocks for them. When a running request needs a block and none is free, the newest running
request is preempted: its blocks are freed and it goes back to the head of the queue, to be
recomputed later (prompt + the tokens it had generated, so its output is unchanged).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .kv_cache import BlockManager
from .request import Request, Status


@dataclass
class ScheduledBatch:
    requests: list[Request] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)     # tokens of each request computed this step

    def __len__(self) -> int:
        return len(self.requests)


class Scheduler:
    def __init__(self, blocks: BlockManager, max_num_seqs: int, max_num_tokens: int, max_model_len: int = 1 << 30):
        if max_num_seqs < 1 or max_num_tokens < 1:
            raise ValueError("max_num_seqs and max_num_tokens must be >= 1")
        self.blocks = blocks
        self.max_num_seqs, self.max_num_tokens, self.max_model_len = max_num_seqs, max_num_tokens, max_model_len
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0

    def add(self, req: Request) -> None:
        need = min(len(req.prompt_token_ids) + req.params.max_tokens, self.max_model_len)
        if need > self.blocks.capacity_tokens:
            raise ValueError(f"request {req.request_id} needs up to {need} tokens of KV cache "
                             f"(prompt {len(req.prompt_token_ids)} + max_tokens {req.params.max_tokens}); "
                             f"the cache holds {self.blocks.capacity_tokens}")
        self.waiting.append(req)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.max_num_tokens
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            remaining = req.num_tokens - req.num_computed_tokens
            req.keep_drafts(max(0, budget - remaining))       # drafts only ride along when they fit
            n = min(remaining + len(req.draft_token_ids), budget)
            while not self.blocks.allocate(req.request_id, req.num_computed_tokens + n):
                victim = self.running.pop()          # the newest request gives way
                self._preempt(victim)
                preempted = True
                if victim is req:
                    break
            else:
                batch.requests.append(req)
                batch.num_tokens.append(n)
                budget -= n
                i += 1
                continue
            break
        # Admitting new work right after a preemption would only thrash the cache.
        while self.waiting and not preempted and budget > 0 and len(self.running) < self.max_num_seqs:
            req = self.waiting[0]
            n = min(req.num_tokens - req.num_computed_tokens, budget)
            if not self.blocks.allocate(req.request_id, req.num_computed_tokens + n):
                break
            self.waiting.popleft()
            req.status = Status.RUNNING
            self.running.append(req)
            batch.requests.append(req)
            batch.num_tokens.append(n)
            budget -= n
        return batch

    def finish(self, req: Request, reason: str) -> None:
        req.status, req.finish_reason = Status.FINISHED, reason
        self.running.remove(req)
        self.blocks.free(req.request_id)

    def _preempt(self, req: Request) -> None:
        self.blocks.free(req.request_id)
        req.status, req.num_computed_tokens, req.num_mtp_computed = Status.WAITING, 0, 0
        req.keep_drafts(0)
        self.num_preemptions += 1
        self.waiting.appendleft(req)
