"""Attention data parallelism at the request level: which rank serves a request, and the one point
per iteration where the ranks exchange what finished.

Every rank sees every request and routes it the same way (the rank with the fewest routed tokens,
then requests); a rank schedules only its own and keeps the others waiting until the rank that
owns one reports it finished. The forward's own collectives (token counts, the MLP's gathers) are
AttentionDataParallel's, in parallel.py; a rank with nothing to run still joins them with a dummy
forward (EngineCore.step).

Invariant 2: `flush` is the one point every rank reaches every iteration, where what arose on some
ranks only (finished requests, iteration statistics) is exchanged, an empty payload when a rank
has nothing. A collective that only the ranks with something to say enter hangs the others.
"""
from __future__ import annotations

import dataclasses

from .faults import Faults
from .outputs import IterationStats, SchedulerOutput
from .parallel import AttentionDataParallel, RankMapping
from .request import Request, Status
from .scheduler import Scheduler


class AttentionDpCoordinator:
    def __init__(self, group: AttentionDataParallel, mapping: RankMapping, faults: Faults,
                 gather_iteration_stats: bool):
        self.group, self.mapping = group, mapping
        self.remote: dict[int, Request] = {}                    # requests other ranks serve, by id
        self.load = [[0, 0] for _ in range(group.size)]        # [tokens, requests] routed to each rank
        self.keeps_cache: dict[int, int] = {}                   # request keeping a prefix -> its rank
        self.iteration_stats: list[IterationStats] = []
        rank = mapping.rank
        self.gather_stats = gather_iteration_stats or bool(faults.get("all_rank_stats", rank))
        # Faults that act every iteration, read once here rather than on the step's path.
        idle = faults.get("idle_rank", rank)
        self.idle_iterations = int(idle.arg or 0) if idle else 0
        self.plant_gather = bool(faults.get("gather_when_finished", rank))

    def route(self, req: Request) -> bool:
        """True when this rank serves the request; else it waits here for its owner's result. A
        request that forks another's cached prefix goes where that cache is."""
        if req.cached_prefix is not None:
            rank = self.keeps_cache[req.cached_prefix[0]]
        else:
            rank = min(range(len(self.load)), key=lambda r: (self.load[r][0], self.load[r][1], r))
        if req.keep_cache_tokens:
            self.keeps_cache[req.request_id] = rank
        self._count_load(rank, req, +1)
        if rank != self.group.rank:
            self.remote[req.request_id] = req
            return False
        return True

    def forget(self, request_ids) -> None:
        """Prefixes released (EngineCore.release): no request forks them any more."""
        for request_id in request_ids:
            self.keeps_cache.pop(request_id, None)

    def has_remote(self) -> bool:
        return bool(self.remote)

    def is_idle(self, iteration: int) -> bool:
        """The idle_rank fault: this rank schedules nothing for its first N iterations."""
        return iteration <= self.idle_iterations

    def record(self, iteration: int, sched: SchedulerOutput, scheduler: Scheduler) -> None:
        self.iteration_stats.append(IterationStats(
            iteration=iteration, rank=self.mapping.rank, requests=len(sched), tokens=sum(sched.num_tokens),
            running=len(scheduler.running), waiting=len(scheduler.waiting),
            free_kv_blocks=scheduler.blocks.num_free))

    def flush(self, finished: list[Request]) -> list[Request]:
        """Exchange this iteration's finished requests (so every rank returns every output) and,
        when asked for, every rank's iteration statistics. Returns every rank's finished requests."""
        comm = self.group.comm
        if finished and self.plant_gather:
            comm.all_gather_object([r.request_id for r in finished])      # the planted bug
        mine = {"done": [_result(r) for r in finished],
                "stats": [dataclasses.asdict(s) for s in self.iteration_stats[-1:]] if self.gather_stats else []}
        everyone = comm.all_gather_object(mine)
        done = list(finished)
        for rank, payload in enumerate(everyone):           # a payload's rank owned its requests
            if rank == self.group.rank:
                for req in finished:
                    self._count_load(rank, req, -1)
                continue
            self.iteration_stats += [IterationStats(**s) for s in payload["stats"]]
            for result in payload["done"]:
                req = self.remote.pop(result["request_id"])
                _adopt(req, result)
                done.append(req)
                self._count_load(rank, req, -1)
        return done

    def _count_load(self, rank: int, req: Request, sign: int) -> None:
        self.load[rank][0] += sign * (len(req.prompt_token_ids) + req.params.max_tokens)
        self.load[rank][1] += sign


def _result(req: Request) -> dict:
    """What another rank needs of a finished request to return it as its own."""
    return {"request_id": req.request_id, "output_token_ids": req.output_token_ids,
            "finish_reason": req.finish_reason, "stop_text_end": req.stop_text_end, "spec": req.spec,
            "context_logits": req.context_logits, "prompt_scores": [c.cpu() for c in req.prompt_scores]}


def _adopt(req: Request, result: dict) -> None:
    req.output_token_ids = list(result["output_token_ids"])
    req.finish_reason, req.stop_text_end = result["finish_reason"], result["stop_text_end"]
    req.spec, req.context_logits = result["spec"], result["context_logits"]
    req.prompt_scores = result["prompt_scores"]
    req.status = Status.FINISHED
