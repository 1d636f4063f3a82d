"""Fault injection: switches that re-create, on purpose, the bugs the engine's invariants guard
against, so that tests (and users checking their CI) can see each one caught or survived. All off
unless named in the TRTX_FAULTS environment variable:

    TRTX_FAULTS="name[@RANK][:ARG],..."        @RANK: only on that global rank (default: all)

    drop_mtp_on_last_stage   the last pipeline stage drops the MTP module's weights, as every
                             other stage does (the production bug behind invariant 1); the engine
                             must refuse to start rather than hang or silently not draft.
    idle_rank@R:N            attention DP: rank R schedules nothing for its first N iterations
                             (a rank running dry while the others are busy); it must keep joining
                             every collective with dummy forwards.
    all_rank_stats           attention DP: gather every rank's iteration statistics every
                             iteration (the option whose rank-local gather crashed production).
    gather_when_finished     attention DP: a rank that finished requests this iteration gathers
                             them in an extra collective that the other ranks never reach: the
                             production bug behind invariant 2, for the desync detector to catch.
    drop_prepare_hook:HOOK   the capture path (batches synthesised for warmup / graph capture)
                             skips prepare hook HOOK (tokens, decode_attention,
                             prefill_attention): the production bug behind invariant 3; the
                             missing metadata must be reported, not read stale.
    graph_size_alone@R       attention DP with decode graphs: rank R replays the graph its own
                             batch fits instead of the size the ranks agreed on (or runs eagerly
                             while they replay): the graph's collectives then differ in size.
    warmup_oom@R:SHAPE       rank R reports that warmup shape SHAPE (e.g. decode-8) does not fit
                             in its memory (the production bug behind invariant 4 had one rank
                             skip it alone): every rank must skip it, or all stop, by option.
    early_eos:Q              a request cut short: each request, with probability Q (a number in
                             [0, 1]), finishes after its first generated token as if the model had
                             emitted EOS next (finish reason "stop"; not with ignore_eos). A request
                             is hit when a hash of its prompt's token ids and its sampling seed,
                             as a uniform number in [0, 1), is below Q: a seeded run is
                             reproducible, other seeds hit other requests, every rank and stage
                             decides alike, and the expected accuracy drop is Q x the mean
                             accuracy (a planted regression of known size: benchmarks/bench_gate.py).

The variable is read and parsed once, when the engine's configuration is built (EngineConfig):
in each rank's process for `LLM(...)` on ranks, in the `trtx eval` process for its ranks, which
receive it with the rest of the configuration. The parsed `Faults` travel with the configuration
to every part that acts on one.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass

from .errors import ConfigError

KNOWN = {"drop_mtp_on_last_stage", "idle_rank", "all_rank_stats", "gather_when_finished", "drop_prepare_hook",
         "warmup_oom", "graph_size_alone", "early_eos"}


@dataclass(frozen=True)
class Fault:
    name: str
    rank: int | None = None        # None: every rank
    arg: str | None = None


@dataclass(frozen=True)
class Faults:
    """The faults switched on for a job: parsed once from a TRTX_FAULTS value."""
    items: tuple[Fault, ...] = ()

    @property
    def spec(self) -> str:
        """The TRTX_FAULTS value that parses to these faults."""
        return ",".join(f.name + (f"@{f.rank}" if f.rank is not None else "") + (f":{f.arg}" if f.arg else "")
                        for f in self.items)

    @classmethod
    def parse(cls, spec: str) -> "Faults":
        items = {}
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            head, _, arg = item.partition(":")
            name, _, rank = head.partition("@")
            if name not in KNOWN:
                raise ConfigError(f"TRTX_FAULTS names unknown fault {name!r}; known: {', '.join(sorted(KNOWN))}")
            if rank and not rank.isdigit():
                raise ConfigError(f"TRTX_FAULTS: {item!r}: expected NAME@RANK with a rank number")
            if name == "early_eos" and rank:
                raise ConfigError(f"TRTX_FAULTS: {item!r}: early_eos applies to every rank alike (their schedulers "
                                  "must agree): no @RANK")
            if name == "early_eos" and not 0 <= _number(arg) <= 1:
                raise ConfigError(f"TRTX_FAULTS: {item!r}: early_eos takes a fraction Q in [0, 1] (early_eos:Q)")
            items[name] = Fault(name, int(rank) if rank else None, arg or None)
        return cls(tuple(items.values()))

    @classmethod
    def from_env(cls) -> "Faults":
        return cls.parse(os.environ.get("TRTX_FAULTS", ""))

    def get(self, name: str, rank: int) -> Fault | None:
        """The fault if it is switched on for this rank."""
        if name not in KNOWN:
            raise ValueError(f"unknown fault {name!r}")
        return next((f for f in self.items if f.name == name and f.rank in (None, rank)), None)

    def early_eos(self, rank: int) -> float:
        """Q of early_eos on this rank: the share of requests cut short (0: off)."""
        fault = self.get("early_eos", rank)
        return float(fault.arg) if fault else 0.0


def cut_short(prompt_token_ids: list[int], seed: int | None, q: float) -> bool:
    """early_eos: whether this request is hit, from the request alone (its prompt and seed hashed to
    a uniform number in [0, 1)), so that every run, rank and stage draws the same."""
    digest = hashlib.blake2b(repr((seed, list(prompt_token_ids))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64 < q


def _number(text: str) -> float:
    """text as a number; NaN (which no range holds) when it is none."""
    try:
        return float(text)
    except ValueError:
        return math.nan
