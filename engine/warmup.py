"""Warmup: run each batch shape the engine will meet once before serving (decode batches from
max_num_seqs down to 1, each sequence carrying 1 + nextn tokens, and one max-tokens prefill), so
first-use costs (allocator growth, kernel selection) are paid up front, the decode graphs are
captured (when enabled, engine/graphs.py; a shape skipped here is captured by no rank), and a
shape that does not fit in memory is found before a request needs it.

Invariant 4 is why every decision here is collective. A production engine let one rank that ran
out of memory skip a warmup shape on its own while its peers entered that shape's collectives and
waited forever. Here the ranks agree on the list (the intersection of their lists, in rank 0's
order), every rank checks every shape against its free memory (or a configured budget) before any
rank runs it, and all of them run it or none does: with on_oom="skip" every rank skips it, with
"stop" every rank raises the same error. Either way the log names the rank and the shape. An
out-of-memory error inside a shape's forward is never caught by one rank of several: it ends
that rank, and the launcher tears the job down with its traceback.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from . import faults
from .device import free_memory_bytes
from .prepare import synthetic_chunks

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


def bytes_needed(shape: Shape, cfg, local_heads: int, local_inter: int) -> int:
    """A generous estimate of one forward's activations: the token-wise tensors of a layer, the
    attention scores, and the logits."""
    tokens = shape.num_seqs * shape.tokens_each
    elem = torch.empty((), dtype=cfg.dtype).element_size()
    per_token = (8 * cfg.hidden_size + 3 * local_inter + 2 * cfg.vocab_size) * elem
    scores = shape.num_seqs * local_heads * shape.tokens_each * shape.tokens_each * 4
    return 2 * (tokens * per_token + scores)


def run(core, on_oom: str = "skip", memory_budget: int | None = None) -> list[tuple[str, str]]:
    """Warm every agreed shape up on every rank; returns (shape name, "ran" or why skipped)."""
    if on_oom not in ("skip", "stop"):
        raise ValueError(f"on_oom must be 'skip' or 'stop', got {on_oom!r}")
    rank, comm = core.mapping.rank, core.parallel.world
    mine = shapes(core.scheduler.max_num_seqs, core.scheduler.max_num_tokens, core.max_model_len, core.mtp_nextn)
    agreed = _agree(comm, mine)
    layer = core.model.layers[0]
    fault = faults.get("warmup_oom", rank)
    report = []
    for shape in agreed:
        need = bytes_needed(shape, core.cfg, layer.self_attn.num_heads, layer.mlp.inter)
        have = memory_budget if memory_budget is not None else free_memory_bytes(core.device)
        if fault is not None and fault.arg == shape.name:
            verdict = (rank, "reports out of memory (fault warmup_oom)")
        else:
            verdict = (rank, None if need <= have else f"needs {need / 2**20:.1f} MiB, has {have / 2**20:.1f} MiB")
        verdicts = [verdict] if comm is None else comm.all_gather_object(verdict)
        short = [f"rank {r} ({why})" for r, why in verdicts if why]
        if short:
            why = f"warmup shape {shape.name} does not fit on {', '.join(short)}"
            if on_oom == "stop":
                raise WarmupError(why + "; every rank stops (on_oom='stop')")
            log.warning("%s: every rank skips it", why)
            report.append((shape.name, "skipped: " + why))
            continue
        try:
            core.warm_forward(synthetic_chunks(shape.num_seqs, shape.tokens_each, core.blocks.block_size))
            if shape.kind == "decode" and core.graphs is not None:
                core.graphs.capture(shape.num_seqs)
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
