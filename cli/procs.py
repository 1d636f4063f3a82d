"""Child processes that never outlive trtx. Standard library only: the launcher imports it before
its ranks start, where every millisecond counts. (launch/rank_entry.py, run by path under
`python -S`, imports nothing of the package and keeps a copy of die_with_parent of its own.)"""
from __future__ import annotations

import ctypes
import signal


def die_with_parent() -> None:
    """In a child (or before exec): get SIGKILL when the parent dies, however it dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except OSError:
        pass
