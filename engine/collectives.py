"""Every collective the engine runs goes through a `Collectives` object (one per process group), so
that one place can make sure all ranks of the group are at the same collective.

Invariant 2 says a rank's sequence of collectives is a function of the iteration count, never of
its local batch. When a rank breaks it (a gather reached by some ranks only), the next collective
pairs with the wrong partner: a hang, or a payload read as something else. With the desync
detector on (`check=True`, or TRTX_CHECK_COLLECTIVES=1 in the environment), each collective first
exchanges a small fingerprint: sequence number, operation, call site and payload shape. Every
rank's fingerprint check pairs with every other rank's (it is the same fixed-size all-gather
whatever collective follows), so a mismatch is seen by all of them, and they raise
CollectiveDesync naming each rank's sequence number and call site instead of hanging.
"""
from __future__ import annotations

import os
import sys
import zlib
from contextlib import contextmanager

import torch
import torch.distributed as dist

_HERE = {__file__, os.path.join(os.path.dirname(__file__), "parallel.py")}


class CollectiveDesync(RuntimeError):
    pass


class Collectives:
    def __init__(self, group, size: int, device: torch.device, check: bool | None = None):
        self.group, self.size, self.device = group, size, device
        self.check = os.environ.get("TRTX_CHECK_COLLECTIVES", "") not in ("", "0") if check is None else check
        self.seq = 0

    def all_reduce(self, x: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
        if self.size > 1:
            self._enter("all_reduce", x)
            dist.all_reduce(x, op=op, group=self.group)
        return x

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """[size, *x.shape]: every rank's x (same shape on every rank)."""
        if self.size == 1:
            return x[None]
        self._enter("all_gather", x)
        out = torch.empty((self.size * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
        dist.all_gather_into_tensor(out, x.contiguous(), group=self.group)    # gloo wants rank blocks on dim 0
        return out.view(self.size, *x.shape)

    def all_gather_object(self, obj) -> list:
        """Every rank's picklable object, in rank order (sizes may differ: no shape check)."""
        if self.size == 1:
            return [obj]
        self._enter("all_gather_object", None)
        out = [None] * self.size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def broadcast(self, x: torch.Tensor, src: int) -> torch.Tensor:
        if self.size > 1:
            self._enter(f"broadcast from {src}", x)
            dist.broadcast(x, src, group=self.group)
        return x

    @contextmanager
    def unchecked(self):
        """No fingerprints inside: for CUDA-graph capture, where the check's host read-back cannot
        run. The graph as a whole is agreed (and checked) before each replay instead."""
        check, self.check = self.check, False
        try:
            yield
        finally:
            self.check = check

    def _enter(self, op: str, payload: torch.Tensor | None) -> None:
        self.seq += 1
        if not self.check:
            return
        site = _call_site()
        shape = "object" if payload is None else f"{tuple(payload.shape)} {payload.dtype}"
        mine = torch.tensor([self.seq, _crc(op), _crc(site), _crc(shape)], dtype=torch.long, device=self.device)
        out = torch.empty(self.size * 4, dtype=torch.long, device=self.device)
        dist.all_gather_into_tensor(out, mine, group=self.group)
        if bool((out.view(self.size, 4) == mine).all()):
            return
        # Out of step: every rank got here (this gather pairs with theirs), so all can describe
        # where they are before raising.
        where = [None] * self.size
        dist.all_gather_object(where, (dist.get_rank(), self.seq, op, shape, site), group=self.group)
        lines = [f"  rank {r}: collective #{seq} {o} {s} at {at}" for r, seq, o, s, at in where]
        raise CollectiveDesync("ranks are at different collectives (a collective behind a per-rank "
                               "condition?):\n" + "\n".join(lines))


def _call_site() -> str:
    """file:line in function of the first frame outside the collective wrappers."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename in _HERE:
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} in {frame.f_code.co_name}"


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())
