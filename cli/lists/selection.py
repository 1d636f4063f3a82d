"""Which entries of a context run here, and how: explained block by block and waive by waive
(`trtx list --explain`, `--markers`), checked against the tests that exist, sharded by recorded
durations (`--shard K/N`), and planned with each entry's timeout and the waives that can apply to
its tests (what `trtx run` hands to its pytest children)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .collect import KnownTests
from .testdb import TestDb, TestEntry
from .testline import names_entry
from .waives import Waive, WaiveFile, WaiveIndex


def explain_blocks(db: TestDb, context: str, info: dict):
    """`list --explain`: for every block of the context, whether it applies here and each key's check."""
    for n, block in enumerate(db.blocks(context), 1):
        checks = block.condition.checks(info)
        verdict = "applies" if all(c.ok for c in checks) else "does not apply"
        tests = f"{len(block.tests)} test" + ("" if len(block.tests) == 1 else "s")
        yield f"# block {n} ({block.path}:{block.line}): {verdict}, {tests}"
        for c in checks:
            actual = "absent" if c.actual is None else c.actual
            yield f"#   {'ok  ' if c.ok else 'FAIL'} {c.key}: {actual} (wanted {c.wanted})"


def explain_waives(entries: list[TestEntry], waives: WaiveFile, info: dict):
    """For each waive that can apply to a listed entry's tests (its own, around it or inside it,
    as `trtx run` finds them), in file line order: whether it applies here, and which platform
    name decided."""
    names = ", ".join(info["platforms"]) or "none"
    yield f"# waives ({waives.path}); this system's platforms: {names}"
    every = WaiveIndex(waives.entries)
    found = {w for entry in entries for w in every.for_entry(entry.ref)}
    for w in sorted(found, key=lambda w: w.line):
        if w.platform is None:
            verdict = "applies (no full:PLATFORM/)"
        elif hit := w.platform_match(info):
            verdict = f"applies (platform {hit} matched full:{w.platform}/)"
        else:
            verdict = f"does not apply (no platform of this system is {w.platform})"
        yield f"#   line {w.line}: {w.render()}: {verdict}"


def with_markers(entry: TestEntry, here: WaiveIndex) -> str:
    """`list --markers`: the entry, its markers, the waives (of those that apply here) naming it
    or around it, and how many name a test inside it."""
    found = here.for_entry(entry.ref)
    # A longer id lies inside the entry (a folder, file or class): counted, as `list` collects no tests.
    inside = [w for w in found if len(w.ref.test_id.rstrip("/")) > len(entry.ref.test_id.rstrip("/"))]
    extra = [entry.markers] if entry.markers else []
    extra += [f"waived: {w.label}" for w in found if w not in inside]
    extra += [f"waived inside: {len(inside)}"] if inside else []
    return "  ".join([str(entry.ref), *extra])


def check_known(entries: list[TestEntry], test_root: str) -> None:
    """A UserError naming (the first five of) the entries that name no test under the test root,
    each with the closest test ids."""
    known = KnownTests(test_root)
    unknown = [e for e in entries if not known(e.ref)]
    if unknown:
        lines = []
        for e in unknown[:5]:
            near = known.closest(e.ref)
            lines.append(f"{e.path}:{e.line}: {e.ref.test_id} names no test under {test_root}"
                         + (f"; closest: {', '.join(near)}" if near else ""))
        more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise UserError("; ".join(lines) + more)


def parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        k, n = (int(x) for x in value.split("/"))
        if not 1 <= k <= n:
            raise ValueError
    except ValueError:
        raise UserError(f"--shard expects K/N with 1 <= K <= N, got {value!r}") from None
    return k, n


def load_durations(path: Path) -> dict[str, float]:
    """{list entry: seconds} from an earlier run's durations.json; none when there is no file."""
    if not path.exists():
        return {}
    try:
        durations = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"not a durations file ({e})", str(path), getattr(e, "lineno", None)) from None
    if not isinstance(durations, dict) or not all(isinstance(v, (int, float)) for v in durations.values()):
        raise UserError("a durations file maps each list entry to its seconds, like {\"test_x.py::t\": 12.5}",
                        str(path))
    return durations


def shard(entries: list[TestEntry], k: int, n: int, durations: dict[str, float]) -> list[TestEntry]:
    """Entries of shard k (1-based) of n: longest recorded durations first onto the least loaded
    shard; by count (round robin) when no durations are recorded. List order is kept."""
    if not durations:
        return [e for i, e in enumerate(entries) if i % n == k - 1]
    known = [d for d in durations.values() if d > 0]
    default = sum(known) / len(known) if known else 1.0
    loads, owner = [0.0] * n, {}
    for i in sorted(range(len(entries)), key=lambda i: -durations.get(str(entries[i].ref), default)):
        s = loads.index(min(loads))
        owner[i] = s
        loads[s] += durations.get(str(entries[i].ref), default)
    return [e for i, e in enumerate(entries) if owner[i] == k - 1]


@dataclass
class Planned:
    entry: TestEntry
    timeout_s: int               # the list's TIMEOUT, else the default; a TIMEOUT waive overrides it per test
    waives: list[Waive]          # those that can apply to the entry's tests (WaiveIndex.for_entry)

    def to_json(self) -> dict:
        return {"entry": str(self.entry.ref), "test_id": self.entry.ref.test_id, "timeout_s": self.timeout_s,
                "waives": [{"test_id": w.ref.test_id, "whole_entry": names_entry(w.ref, self.entry.ref),
                            "marker": w.marker, "reason": w.reason or "", "timeout_s": _seconds(w.timeout_min)}
                           for w in self.waives]}

    @property
    def longest_timeout_s(self) -> int:
        return max([self.timeout_s] + [_seconds(w.timeout_min) for w in self.waives if w.timeout_min])


def _seconds(minutes: float | None) -> int | None:
    return None if minutes is None else int(minutes * 60)


def waives_here(waives: WaiveFile, info: dict) -> WaiveIndex:
    """The waives that apply to this system, indexed for WaiveIndex.for_entry."""
    return WaiveIndex([w for w in waives.entries if w.applies_to(info)])


def plan(entries: list[TestEntry], waives: WaiveFile, info: dict, default_timeout_min: float) -> list[Planned]:
    here = waives_here(waives, info)
    return [Planned(e, _seconds(e.timeout_min or default_timeout_min), here.for_entry(e.ref)) for e in entries]
