"""Continuous batching: which requests run this step, and how many of their tokens; and, once the
step ran, what it changed in their state.

Each step has a token budget (max_num_tokens) and a request cap (max_num_seqs). Running requests
go first (one token each when decoding, plus its MTP drafts to verify; a chunk when the prompt
is still being prefilled), then waiting requests are admitted in arrival order while the budget
lasts and the block manager has blocks for them. When a running request needs a block and none is free, the newest running
request is preempted: its blocks are freed and it goes back to the head of the queue, to be
recomputed later (prompt + the tokens it had generated, so its output is unchanged).

After the forward, `update_from_output` commits the model runner's result, identically on every
rank: the computed tokens, the verified new tokens (rolling the cache back past rejected drafts),
stop checks (on each request's output text, extended token by token) and finish reasons, and the
MTP work of the requests still running (reserving blocks for their drafts); `set_drafts` then
stores the drafts proposed for the next step.
"""
from __future__ import annotations

from collections import deque

from .faults import cut_short
from .kv_cache import BlockManager
from .outputs import DraftJob, Drafts, ModelRunnerOutput, RequestResult, SchedulerOutput, StepUpdate
from .prepare import DeviceTokens
from .request import DRAFT_ON_DEVICE, Request, Status
from .tokenizer import IncrementalText, Tokenizer


class Scheduler:
    def __init__(self, blocks: BlockManager, max_num_seqs: int, max_num_tokens: int, max_model_len: int = 1 << 30,
                 *, eos_token_ids: tuple[int, ...] = (), tokenizer: Tokenizer | None = None, mtp_nextn: int = 0,
                 early_eos: float = 0.0):
        if max_num_seqs < 1 or max_num_tokens < 1:
            raise ValueError("max_num_seqs and max_num_tokens must be >= 1")
        self.blocks = blocks
        self.max_num_seqs, self.max_num_tokens, self.max_model_len = max_num_seqs, max_num_tokens, max_model_len
        self.eos_token_ids, self.tokenizer, self.mtp_nextn = eos_token_ids, tokenizer, mtp_nextn
        self.early_eos = early_eos          # fault early_eos: the share of requests cut short (faults.py)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0

    def add(self, req: Request) -> None:
        need = min(len(req.prompt_token_ids) + req.params.max_tokens, self.max_model_len)
        if need > self.blocks.capacity_tokens:
            raise ValueError(f"request {req.request_id} needs up to {need} tokens of KV cache "
                             f"(prompt {len(req.prompt_token_ids)} + max_tokens {req.params.max_tokens}); "
                             f"the cache holds {self.blocks.capacity_tokens}")
        if req.cached_prefix is not None:          # its prompt's first tokens are in another's blocks
            source, tokens = req.cached_prefix
            if req.params.max_tokens != 1:
                # Its MTP cache (and drafting) would start at position 0: only scoring forks.
                raise ValueError(f"request {req.request_id}: a forked prefix is for scoring (max_tokens 1)")
            self.blocks.fork(source, req.request_id, tokens // self.blocks.block_size)
            req.num_computed_tokens = tokens
        self.waiting.append(req)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        batch = SchedulerOutput()
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
        if req.keep_cache_tokens:           # a prefix others fork: kept until EngineCore.release
            self.blocks.truncate(req.request_id, req.keep_cache_tokens // self.blocks.block_size)
        else:
            self.blocks.free(req.request_id)

    def _preempt(self, req: Request) -> None:
        self.blocks.free(req.request_id)
        req.status, req.num_computed_tokens, req.num_mtp_computed = Status.WAITING, 0, 0
        req.keep_drafts(0)
        self.num_preemptions += 1
        self.waiting.appendleft(req)

    def update_from_output(self, out: ModelRunnerOutput) -> StepUpdate:
        """Commit a step's result to the request state: computed tokens and context logits, then
        for each request that sampled, its acceptance counts and new tokens (the cache rolls back
        past rejected drafts) and whether it finished; then the MTP work of those still running."""
        finished, continuing = [], []
        for r in out.results:
            req = r.req
            if r.context_logits is not None:
                req.context_logits.append(r.context_logits)
            if r.prompt_scores is not None:
                req.prompt_scores.append(r.prompt_scores)
            req.num_computed_tokens += r.num_known
            if not r.samples:
                continuing.append(r)             # a prefill chunk: the MTP still catches up
        for r in out.results:
            if not r.samples:
                continue
            req = r.req
            req.spec.record(len(req.draft_token_ids), r.num_accepted)
            req.num_computed_tokens += r.num_accepted      # rejected drafts' cache entries roll back
            req.keep_drafts(0)
            if self._append(req, r.new_token_ids):
                finished.append(req)
            else:
                continuing.append(r)
        # A request that will sample one token never drafts: its MTP cache is never read.
        jobs = [self._draft_job(r) for r in continuing if r.req.params.max_tokens > 1] if self.mtp_nextn else []
        for job in jobs:               # the MTP cache holds these positions once the drafter ran
            job.req.num_mtp_computed = job.end
        return StepUpdate(finished, jobs)

    def set_drafts(self, jobs: list[DraftJob], drafts: Drafts) -> None:
        """The drafts proposed for the next step (the last stage's, broadcast to the others): host
        values, or placeholders for values on the device."""
        for job in jobs:
            req = job.req
            tokens, probs = drafts.get(req.request_id, ([], []))
            req.draft_device = tokens if isinstance(tokens, DeviceTokens) else None
            req.draft_token_ids[:] = [DRAFT_ON_DEVICE] * tokens.count if req.draft_device else tokens
            req.draft_probs[:] = probs

    def _append(self, req: Request, tokens: list[int]) -> bool:
        """Append the step's new tokens one by one; True when the request finished (tokens after
        the one that finished it are dropped)."""
        for token in tokens:
            req.output_token_ids.append(token)
            reason = self._finish_reason(req, token)
            if reason:
                self.finish(req, reason)
                return True
        return False

    def _finish_reason(self, req: Request, token: int) -> str | None:
        p = req.params
        if not p.ignore_eos and token in self.eos_token_ids:
            return "stop"
        if p.stop:
            end = self._stop_text_end(req)
            if end is not None:
                req.stop_text_end = end
                return "stop"
        if len(req.output_token_ids) >= p.max_tokens or req.num_tokens >= self.max_model_len:
            return "length"
        if self.early_eos and not p.ignore_eos and len(req.output_token_ids) == 1 and \
                cut_short(req.prompt_token_ids, p.seed, self.early_eos):
            return "stop"                   # fault early_eos: as if the next token were EOS
        return None

    def _stop_text_end(self, req: Request) -> int | None:
        """Where the first stop string starts in the output text, if one is in it now. The text is
        kept per request and extended by the new token's text (IncrementalText); it held no stop
        string before this token, so only what changed, and the longest stop string's length - 1
        characters before it, are searched: the result is the full text's first match."""
        if req.output_text is None:
            req.output_text = IncrementalText(self.tokenizer)
        changed = req.output_text.update(req.output_token_ids)
        start = max(0, changed - max(0, max(len(s) for s in req.params.stop) - 1))
        tail = req.output_text.tail(start)
        hits = [i for i in (tail.find(s) for s in req.params.stop) if i >= 0]
        return start + min(hits) if hits else None

    def _draft_job(self, r: RequestResult) -> DraftJob:
        """The MTP catch-up range of a request this step computed, and how many drafts to propose:
        no more than can be used before max_tokens or the model length."""
        req = r.req
        end = min(req.num_computed_tokens, req.num_tokens - 1)   # positions whose next token is known
        rows = list(range(r.first_row + req.num_mtp_computed - r.start, r.first_row + end - r.start))
        drafts = 0
        if req.num_computed_tokens == req.num_tokens - 1:          # decoding: draft for the next step
            drafts = min(self.mtp_nextn, req.params.max_tokens - len(req.output_token_ids) - 1,
                         self.max_model_len - req.num_tokens)
            # Drafting writes the MTP cache up to position end + drafts - 2; the target's blocks
            # may not reach that far after a short acceptance.
            while drafts > 0 and not self.blocks.allocate(req.request_id, end + drafts - 1):
                drafts -= 1
        return DraftJob(req, req.num_mtp_computed, end, rows, max(drafts, 0))
