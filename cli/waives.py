"""The waive file (TensorRT-LLM's waives.txt format), read and written losslessly.

    accuracy/test_x.py::TestY::test_z[param] SKIP (https://bugs.example/123)
    full:B200/accuracy/test_x.py::TestY::test_w XFAIL (only on B200)
    unittest/some/file.py -k "expr" UNSTABLE (reason (with parentheses))
    accuracy/test_x.py::TestY::test_v TIMEOUT (90)

One entry a line; a line whose first non-blank character is `#` is a comment. The file is kept as
its raw lines: editing one entry leaves every other byte as it was.
"""
from __future__ import annotations

import fnmatch
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from .errors import UserError
from .fsutil import atomic_write
from .testline import TestRef, shell_words, split_id

MARKERS = ("SKIP", "XFAIL", "UNSTABLE", "TIMEOUT")
_TOKEN = re.compile(r"""\s*("[^"]*"|'[^']*'|\S+)""")
BUG_LINK = re.compile(r"https?://|nvbugs/|\bbug\s*#?\d+", re.IGNORECASE)


@dataclass(frozen=True)
class Waive:
    ref: TestRef
    marker: str
    reason: str | None
    platform: str | None
    line: int                    # 1-based line number in the file

    @property
    def timeout_min(self) -> float | None:
        return float(self.reason) if self.marker == "TIMEOUT" else None

    def applies_to(self, info: dict) -> bool:
        """A `full:PLATFORM/` entry applies only where the gpu matches PLATFORM."""
        if self.platform is None:
            return True
        gpu = str(info.get("gpu", "")).upper()
        want = self.platform.upper()
        return bool(gpu) and (gpu == want or gpu.split()[0] == want or fnmatch.fnmatch(gpu, want))

    def render(self) -> str:
        prefix = f"full:{self.platform}/" if self.platform else ""
        reason = f" ({self.reason})" if self.reason is not None else ""
        return f"{prefix}{self.ref} {self.marker}{reason}"


def parse_line(text: str, path: str, line: int) -> Waive | None:
    """One line of a waive file: a Waive, or None for blank and comment lines."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    platform = None
    if stripped.startswith("full:"):
        platform, sep, stripped = stripped[len("full:"):].partition("/")
        if not sep or not platform:
            raise UserError("'full:' must be followed by PLATFORM/ and the test id", path, line)
    test_id, rest = split_id(stripped)
    pos, marker, marker_end = 0, None, 0
    while pos < len(rest):
        m = _TOKEN.match(rest, pos)
        if not m:
            break
        token = m.group(1)
        bare = token.split("(", 1)[0]
        if bare in MARKERS:
            marker, marker_end = bare, m.start(1) + len(bare)
            args_text = rest[:m.start(1)]
            break
        pos = m.end()
    if marker is None:
        raise UserError(f"{test_id}: no marker; expected one of {', '.join(MARKERS)} after the test id", path, line)
    try:
        args = tuple(shell_words(args_text))
    except ValueError as e:
        raise UserError(str(e), path, line) from None
    tail = rest[marker_end:].strip()
    reason = None
    if tail:
        if not (tail.startswith("(") and tail.endswith(")")):
            raise UserError(f"{test_id}: the reason must be in parentheses, like {marker} (https://bugs/123)",
                            path, line)
        reason = tail[1:-1].strip()
    if marker == "TIMEOUT":
        try:
            if reason is None or float(reason) <= 0:
                raise ValueError
        except ValueError:
            raise UserError(f"{test_id}: TIMEOUT needs minutes in parentheses, like TIMEOUT (90)", path, line) from None
    return Waive(TestRef(test_id, args), marker, reason, platform, line)


class WaiveFile:
    def __init__(self, path: str | Path, text: str = ""):
        self.path = Path(path)
        self.lines = text.splitlines(keepends=True)
        self._reindex()

    def _reindex(self) -> None:
        self.entries = [w for i, raw in enumerate(self.lines, 1) if (w := parse_line(raw, str(self.path), i))]
        self._by_ref: dict[TestRef, list[Waive]] = {}
        for w in self.entries:
            self._by_ref.setdefault(w.ref, []).append(w)

    @classmethod
    def load(cls, path: str | Path) -> "WaiveFile":
        path = Path(path)
        if not path.exists():
            raise UserError("waive file does not exist", str(path))
        return cls(path, path.read_text())

    def text(self) -> str:
        return "".join(self.lines)

    def matching(self, ref: TestRef, info: dict | None = None) -> list[Waive]:
        return [w for w in self._by_ref.get(ref, ()) if info is None or w.applies_to(info)]

    def add(self, waive: Waive) -> None:
        if self.lines and not self.lines[-1].endswith("\n"):
            self.lines[-1] += "\n"
        self.lines.append(waive.render() + "\n")
        self._reindex()

    def remove(self, ref: TestRef) -> list[Waive]:
        gone = self.matching(ref)
        drop = {w.line for w in gone}
        self.lines = [raw for i, raw in enumerate(self.lines, 1) if i not in drop]
        self._reindex()
        return gone

    def save(self) -> None:
        """Replace the file atomically: a reader sees the old or the new file, never half of one."""
        atomic_write(self.path, self.text())


@contextmanager
def editing(path: str | Path):
    """Load, edit and save under a lock, so concurrent `trtx waive` edits never lose one another."""
    path = Path(path)
    with FileLock(str(path) + ".lock", timeout=60):
        wf = WaiveFile.load(path)
        yield wf
        wf.save()


def hygiene(wf: WaiveFile, known) -> list[tuple[Waive, str]]:
    """Problems of a waive file: entries naming no known test (`known(ref) -> bool`), reasons with
    no bug link, duplicates and conflicting markers for the same test and platform."""
    problems = []
    first: dict[tuple, Waive] = {}
    for w in wf.entries:
        if not known(w.ref):
            problems.append((w, f"matches no known test: {w.ref}"))
        if w.marker != "TIMEOUT" and not (w.reason and BUG_LINK.search(w.reason)):
            problems.append((w, "reason has no bug link"))
        key = (w.ref, (w.platform or "").upper())
        if key in first:
            prev = first[key]
            what = "duplicate of" if prev.marker == w.marker else f"conflicts ({prev.marker} vs {w.marker}) with"
            problems.append((w, f"{what} line {prev.line}"))
        else:
            first[key] = w
    return problems
