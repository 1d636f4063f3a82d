"""The engine core: one rank's scheduler and model runner, and the step that joins them.

    schedule   Scheduler.schedule()              -> SchedulerOutput
    execute    ModelRunner.execute(...)          -> ModelRunnerOutput   (forward, logits, verify)
    update     Scheduler.update_from_output(...) -> StepUpdate          (append, stops, finish)
    draft      ModelRunner.draft(...)            -> Drafts              (MTP, for the next step)

Under pipeline parallelism the last stage executes, updates and drafts, then one broadcast carries
its decisions to the other stages, which update their own copy of the state from it
(engine/pipeline.py). Under attention DP each rank runs its own requests (a dummy forward when it
has none) and the coordinator exchanges what finished (engine/attention_dp.py). `LLM` drives
the core until every request has finished.
"""
from __future__ import annotations

import torch

from .attention_dp import AttentionDpCoordinator
from .engine_config import EngineConfig
from .kv_cache import BlockManager
from .model_runner import ModelRunner
from .outputs import SchedulerOutput
from .parallel import Parallel
from .pipeline import share_decisions
from .request import Request
from .scheduler import Scheduler
from .tokenizer import Tokenizer


class EngineCore:
    def __init__(self, config: EngineConfig, parallel: Parallel, tokenizer: Tokenizer | None):
        self.config, self.parallel, self.tokenizer = config, parallel, tokenizer
        self.mapping, self.model_config = parallel.mapping, config.model_config
        self.max_model_len = self.model_config.max_position_embeddings
        self.runner = ModelRunner(config, parallel)
        group = parallel.attention_dp_group
        num_blocks = self.runner.num_kv_blocks()
        if group is None:
            # Every rank runs the same scheduler over the same block tables: the smallest cache wins.
            num_blocks = parallel.agree_min(num_blocks)
        self.blocks = BlockManager(num_blocks, config.block_size)
        self.runner.allocate_kv_cache(self.blocks)
        self.scheduler = Scheduler(self.blocks, config.max_num_seqs, config.max_num_tokens, self.max_model_len,
                                   eos_token_ids=self.model_config.eos_token_ids, tokenizer=tokenizer,
                                   mtp_nextn=config.mtp_nextn, early_eos=config.faults.early_eos(self.mapping.rank))
        self.dp = AttentionDpCoordinator(group, self.mapping, config.faults, config.gather_iteration_stats) \
            if group is not None else None
        self.num_steps = 0
        self.num_served = 0                      # requests this rank ran

    def add_request(self, req: Request) -> None:
        cfg = self.model_config
        if not req.prompt_token_ids:
            raise ValueError(f"request {req.request_id}: empty prompt")
        bad = [t for t in req.prompt_token_ids if not 0 <= t < cfg.vocab_size]
        if bad:
            raise ValueError(f"request {req.request_id}: token id {bad[0]} outside the vocabulary "
                             f"(size {cfg.vocab_size})")
        if len(req.prompt_token_ids) >= self.max_model_len:
            raise ValueError(f"request {req.request_id}: prompt of {len(req.prompt_token_ids)} tokens leaves no "
                             f"room to generate (max_position_embeddings {self.max_model_len})")
        start = req.params.prompt_logprobs_from
        if start is not None and start >= len(req.prompt_token_ids):
            raise ValueError(f"request {req.request_id}: prompt_logprobs_from {start} leaves nothing to score "
                             f"in a prompt of {len(req.prompt_token_ids)} tokens")
        if req.params.stop and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer.json in the checkpoint directory")
        if self.dp is not None and not self.dp.route(req):
            return
        if req.params.seed is not None:
            req.generator = torch.Generator(device=self.parallel.device).manual_seed(req.params.seed)
        self.scheduler.add(req)
        self.num_served += 1

    def release(self, request_ids) -> None:
        """Free the cache that finished requests kept for others to fork (keep_cache_tokens)."""
        for request_id in request_ids:
            self.blocks.free(request_id)
        if self.dp is not None:
            self.dp.forget(request_ids)

    def has_unfinished(self) -> bool:
        """Under attention DP the same answer on every rank: each learns every finished request
        at the same iteration."""
        return self.scheduler.has_unfinished() or (self.dp is not None and self.dp.has_remote())

    def step(self) -> list[Request]:
        """One iteration; returns the requests that finished (under attention DP, every rank's)."""
        self.num_steps += 1
        if self.dp is None:
            sched = self.scheduler.schedule()
            if not sched:
                raise RuntimeError("scheduler produced an empty batch with requests pending (KV cache too small?)")
            return self._run(sched)
        idle = self.dp.is_idle(self.num_steps)
        sched = SchedulerOutput() if idle else self.scheduler.schedule()
        self.dp.record(self.num_steps, sched, self.scheduler)
        if not sched and self.scheduler.has_unfinished() and not idle:
            raise RuntimeError("scheduler produced an empty batch with requests pending (KV cache too small?)")
        # Nothing scheduled: a dummy forward (writing only to the null block), since the forward's
        # collectives need every rank.
        return self.dp.flush(self._run(sched))

    def _run(self, sched: SchedulerOutput) -> list[Request]:
        out = self.runner.execute(sched)
        nextn, pp = self.config.mtp_nextn, self.mapping.pp_size
        if self.mapping.is_last_stage:
            update = self.scheduler.update_from_output(out)
            drafts = self.runner.draft(update.draft_jobs, out)
            if pp > 1:
                share_decisions(self.parallel, nextn, sched, out, update.draft_jobs, drafts)
        else:
            drafts = share_decisions(self.parallel, nextn, sched, out)
            update = self.scheduler.update_from_output(out)
        self.scheduler.set_drafts(update.draft_jobs, drafts)
        return update.finished
