"""Warmup: run each batch shape the engine will meet once before serving (decode batches from
max_num_seqs down to 1, each sequence carrying 1 + nextn tokens, and one max-tokens prefill), so
first-use costs (allocator growth, kernel selection) are paid up front, the decode graphs are
captured (when enabled, engine/graphs.py; a shape skipped here is captured by no rank), and a
shape that does not fit in memory is found before a request needs it.

Invariant 4 is why every decision here is collective. A production engine let one rank that ran
out of memory skip a warmup shape on its own while its peers entered that shape's collectives and
waited forever. Here the ranks agree on the list (the intersection of their lists, in rank 0's
order), every rank checks every shape against its free memory (or a configured budget) before any
rank runs it, and all of them run it or none does: with on_warmup_oom="skip" every rank skips it, with
"stop" every rank raises the same error. Either way the log names the rank and the shape. An
out-of-memory error inside a shape's forward is never caught by one rank of several: it ends
that rank, and the launcher tears the job down with its traceback.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .device import free_memory_bytes

log = logging.getLogger("trtx.engine.warmup")


class WarmupError(RuntimeError):
    pass


@dataclass(frozen=True)
class Shape:
    kind: str               # "decode" or "prefill"
    num_seqs: int
    tokens_each: int

    @property
    def name(self) -> str:
        return f"decode-{self.num_seqs}" if self.kind == "decode" else f"prefill-{self.tokens_each}"


def shapes(max_num_seqs: int, max_num_tokens: int, max_model_len: int, nextn: int) -> list[Shape]:
    sizes, s = [], max_num_seqs
    while s >= 1:            # halving from max_num_seqs always ends at 1
        sizes.append(s)
        s //= 2
    decodes = [Shape("decode", s, 1 + nextn) for s in sizes if s * (1 + nextn) <= max_num_tokens]
    return decodes + [Shape("prefill", 1, min(max_num_tokens, max_model_len - 1))]


def run(runner, config, parallel) -> list[tuple[str, str]]:
    """Warm every agreed shape up on every rank (`runner`: a ModelRunner, `config`: the
    EngineConfig); returns (shape name, "ran" or why skipped)."""
    rank, comm = parallel.mapping.rank, parallel.world
    mine = shapes(config.max_num_seqs, config.max_num_tokens, config.model_config.max_position_embeddings,
                  config.mtp_nextn)
    agreed = _agree(comm, mine)
    fault = config.faults.get("warmup_oom", rank)
    report = []
    for shape in agreed:
        need = runner.activation_bytes(shape.num_seqs, shape.tokens_each)
        budget = config.warmup_memory_budget
        have = budget if budget is not None else free_memory_bytes(parallel.device)
        if fault is not None and fault.arg == shape.name:
            verdict = (rank, "reports out of memory (fault warmup_oom)")
        else:
            verdict = (rank, None if need <= have else f"needs {need / 2**20:.1f} MiB, has {have / 2**20:.1f} MiB")
        verdicts = [verdict] if comm is None else comm.all_gather_object(verdict)
        short = [f"rank {r} ({why})" for r, why in verdicts if why]
        if short:
            why = f"warmup shape {shape.name} does not fit on {', '.join(short)}"
            if config.on_warmup_oom == "stop":
                raise WarmupError(why + "; every rank stops (on_warmup_oom='stop')")
            log.warning("%s: every rank skips it", why)
            report.append((shape.name, "skipped: " + why))
            continue
        try:
            runner.warm(shape.num_seqs, shape.tokens_each)
            if shape.kind == "decode" and runner.graphs is not None:
                runner.graphs.capture(shape.num_seqs)
                if runner.drafter is not None:
                    runner.drafter.capture(shape.num_seqs)
        except torch.OutOfMemoryError as e:
            if comm is not None:          # peers are inside this shape's collectives: never alone
                raise
            log.warning("warmup shape %s ran out of memory on the only rank (%s): skipped", shape.name, e)
            report.append((shape.name, f"skipped: out of memory ({e})"))
            continue
        report.append((shape.name, "ran"))
    return report


def _agree(comm, mine: list[Shape]) -> list[Shape]:
    """The shapes every rank listed, in rank 0's order."""
    if comm is None:
        return mine
    lists = comm.all_gather_object([s.name for s in mine])
    common = set.intersection(*(set(names) for names in lists))
    by_name = {s.name: s for s in mine}
    return [by_name[name] for name in lists[0] if name in common]
