"""Fault injection: switches that re-create, on purpose, the bugs the engine's invariants guard
against, so that tests (and users checking their CI) can see each one caught. All off unless
named in the TRTX_FAULTS environment variable (comma-separated), which every rank inherits.

    drop_mtp_on_last_stage   the last pipeline stage drops the MTP module's weights, as every
                             other stage does (the production bug behind invariant 1); the
                             engine must refuse to start rather than hang or silently not draft.
"""
from __future__ import annotations

import os

KNOWN = {"drop_mtp_on_last_stage"}


def active(name: str) -> bool:
    if name not in KNOWN:
        raise ValueError(f"unknown fault {name!r}")
    return name in enabled()


def enabled() -> set[str]:
    names = {n.strip() for n in os.environ.get("TRTX_FAULTS", "").split(",") if n.strip()}
    unknown = names - KNOWN
    if unknown:
        raise ValueError(f"TRTX_FAULTS names unknown faults {sorted(unknown)}; known: {sorted(KNOWN)}")
    return names
