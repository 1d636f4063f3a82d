"""The waive file (TensorRT-LLM's waives.txt format), read and written losslessly.

    accuracy/test_x.py::TestY::test_z[param] SKIP (https://bugs.example/123)
    full:B200/accuracy/test_x.py::TestY::test_w XFAIL (only on B200)
    full:sm100/unittest/some/file.py -k "expr" UNSTABLE (reason (with parentheses))
    accuracy/test_x.py::TestY::test_v TIMEOUT (90)
    perf/test_perf.py::test_perf[x] SKIP # (a comment, not a reason)

Lines follow the grammar of testline.py (`#` comments anywhere, markers found as TensorRT-LLM
finds them). `full:PLATFORM/` limits an entry to systems with that platform name
(sysinfo.platform_names). The file is kept as its raw text: editing one entry leaves every other
byte as it was, CRLF line ends, a UTF-8 byte order mark and a missing final newline included.
"""
from __future__ import annotations

import bisect
import fcntl
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..fsutil import atomic_write, read_utf8
from .sysinfo import platform_names
from .testline import MINUTES, TestRef, names_entry, names_folder, parse_ref, split_line, within

MARKERS = ("SKIP", "XFAIL", "UNSTABLE", "TIMEOUT")      # ISOLATION is a test-db marker
BOM = "\ufeff"
BUG_LINK = re.compile(r"https?://|nvbugs/|\bbug\s*#?\d+", re.IGNORECASE)


def waive_label(marker: str, reason: str | None) -> str:
    """How a waive is shown: `SKIP (reason)`, or `SKIP` alone when it has no reason."""
    return f"{marker} ({reason})" if reason else marker


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

    @property
    def label(self) -> str:
        return waive_label(self.marker, self.reason)

    def platform_match(self, info: dict) -> str | None:
        """The system's platform name that `full:PLATFORM/` names (whole, any case), or None."""
        names = info["platforms"] if "platforms" in info else platform_names(info)
        return next((n for n in names if n.upper() == (self.platform or "").upper()), None)

    def applies_to(self, info: dict) -> bool:
        """An entry without `full:PLATFORM/` applies everywhere; one with it where PLATFORM matches."""
        return self.platform is None or self.platform_match(info) is not None

    def render(self) -> str:
        prefix = f"full:{self.platform}/" if self.platform else ""
        reason = f" ({self.reason})" if self.reason is not None else ""
        return f"{prefix}{self.ref} {self.marker}{reason}"


def _reason(rest: str) -> str | None:
    """The text in the parentheses that open `rest`, to the matching ')'; when they do not
    balance, to the first ')' as TensorRT-LLM reads it. What follows is ignored, as there."""
    if not rest.startswith("("):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        depth += (ch == "(") - (ch == ")")
        if depth == 0:
            return rest[1:i].strip()
    close = rest.find(")")
    return rest[1:close].strip() if close > 0 else None


def parse_line(text: str, path: str, line: int) -> Waive | None:
    """One line of a waive file: a Waive, or None for blank and comment lines."""
    parts = split_line(text)
    if parts is None:
        return None
    if parts.marker is None:
        raise UserError(f"{parts.text}: no marker; expected one of {', '.join(MARKERS)} after the test id", path, line)
    if parts.marker not in MARKERS:
        raise UserError(f"{parts.text}: {parts.marker} belongs in a test-db entry, not in the waive file", path, line)
    test_text, platform = parts.text, None
    if test_text.startswith("full:"):
        platform, sep, test_text = test_text[len("full:"):].partition("/")
        if not (sep and platform and test_text):
            raise UserError("'full:' must be followed by PLATFORM/ and the test id", path, line)
        if any(ch.isspace() for ch in platform):
            raise UserError(f"'full:{platform}/': a platform name holds no blank (write full:PLATFORM/TEST)", path,
                            line)
    reason = None
    if parts.rest:
        reason = _reason(parts.rest)
        if reason is None:
            raise UserError(f"{parts.text}: the reason must be in parentheses, like {parts.marker} (https://bugs/123)",
                            path, line)
        if not reason:
            raise UserError(f"{parts.text}: empty reason in {parts.rest!r}", path, line)
    if parts.marker == "TIMEOUT":
        m = MINUTES.match(parts.rest)
        if not m or float(m.group(1)) <= 0:
            raise UserError(f"{parts.text}: TIMEOUT needs minutes in parentheses, like TIMEOUT (90)", path, line)
        reason = m.group(1)
    try:
        ref = parse_ref(test_text)
    except ValueError as e:
        raise UserError(str(e), path, line) from None
    return Waive(ref, parts.marker, reason, platform, line)


def checked(entry: Waive) -> Waive:
    """The entry, refused unless its line reads back as the same entry (a '#', a marker word or a
    line break in the test id or the reason would change what the file says)."""
    text = entry.render()
    try:
        back = parse_line(text, "", 0) if "\n" not in text and "\r" not in text else None
    except UserError as e:
        raise UserError(f"cannot write {text!r}: {e.message}") from None
    if back is None or (back.ref, back.marker, back.reason, back.platform) != \
            (entry.ref, entry.marker, entry.reason, entry.platform):
        raise UserError(f"cannot write {text!r}: it would read back as a different entry")
    return entry


def _lines(text: str) -> list[str]:
    """The text as lines that keep their ends ('\n' or '\r\n'); only the last may have none."""
    pieces = text.split("\n")
    return [p + "\n" for p in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])


def _without_end(line: str) -> str:
    return line[:-2] if line.endswith("\r\n") else line[:-1] if line.endswith("\n") else line


class WaiveFile:
    def __init__(self, path: str | Path, text: str = ""):
        self.path = Path(path)
        self.bom = BOM if text.startswith(BOM) else ""      # kept apart: line 1 reads without it, saves with it
        self.lines = _lines(text[len(self.bom):])
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
        return cls(path, read_utf8(path))

    def text(self) -> str:
        return self.bom + "".join(self.lines)

    def matching(self, ref: TestRef, info: dict | None = None) -> list[Waive]:
        return [w for w in self._by_ref.get(ref, ()) if info is None or w.applies_to(info)]

    def add(self, waive: Waive) -> None:
        """Append an entry, ended as the lines before it are (CRLF in a CRLF file). In a file
        without a final newline the end goes before the entry instead, so that the file still
        has none and removing the entry gives back the same bytes."""
        ended = [raw for raw in self.lines if raw.endswith("\n")]
        newline = "\r\n" if ended and ended[-1].endswith("\r\n") else "\n"
        if self.lines and not self.lines[-1].endswith("\n"):
            self.lines[-1] += newline
            self.lines.append(waive.render())
        else:
            self.lines.append(waive.render() + newline)
        self._reindex()

    def remove(self, ref: TestRef) -> list[Waive]:
        gone = self.matching(ref)
        drop = {w.line for w in gone}
        kept = [raw for i, raw in enumerate(self.lines, 1) if i not in drop]
        if kept and len(self.lines) in drop and not self.lines[-1].endswith("\n"):
            kept[-1] = _without_end(kept[-1])          # the file had no final newline: keep it so
        self.lines = kept
        self._reindex()
        return gone

    def save(self) -> None:
        """Replace the file atomically: a reader sees the old or the new file, never half of one."""
        atomic_write(self.path, self.text())


def _lock(path: Path) -> int:
    """A descriptor holding an exclusive flock on the file that `path` names now. A save renames
    a new file over the old one, so a waiter that gets the lock on the old file locks again."""
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise UserError("waive file does not exist", str(path)) from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        held = os.fstat(fd)
        try:
            now = os.stat(path)
            if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def editing(path: str | Path):
    """Load, edit and save under a lock, so concurrent `trtx waive` edits never lose one another.
    The lock is a flock on the waive file itself (through its link, if it is one): a lock file
    beside it would be litter in the user's tree, and one elsewhere could miss another path to
    the same file."""
    path = Path(path)
    fd = _lock(path)
    try:
        wf = WaiveFile.load(path)
        yield wf
        wf.save()
    finally:
        os.close(fd)


def hygiene(wf: WaiveFile, known) -> list[tuple[Waive, str]]:
    """Problems of a waive file: entries naming no known test (`known(ref) -> bool`), reasons with
    no bug link, duplicates and conflicting markers for the same test and platform (the later line
    applies, as in TensorRT-LLM)."""
    problems = []
    earlier: dict[tuple, list[Waive]] = {}      # by (test, platform): its lines so far
    for w in wf.entries:
        if not known(w.ref):
            problems.append((w, f"matches no known test: {w.ref}"))
        if w.marker != "TIMEOUT" and not w.reason:
            problems.append((w, "no reason: give the bug link in parentheses after the marker"))
        elif w.marker != "TIMEOUT" and not BUG_LINK.search(w.reason):
            problems.append((w, "reason has no bug link"))
        prior = earlier.setdefault((w.ref, (w.platform or "").upper()), [])
        # An outcome (SKIP, XFAIL, UNSTABLE) replaces an earlier outcome, a TIMEOUT an earlier
        # TIMEOUT; trtx keeps a TIMEOUT beside an outcome, TensorRT-LLM only the later line of a name.
        same = [p for p in prior if (p.marker == "TIMEOUT") == (w.marker == "TIMEOUT")]
        if same and same[-1].marker == w.marker:
            problems.append((w, f"duplicate of line {same[-1].line}; this later line is the one that applies"))
        elif same:
            problems.append((w, f"conflicts ({same[-1].marker} vs {w.marker}) with line {same[-1].line}; this "
                                f"later line is the one that applies"))
        elif prior:
            problems.append((w, f"conflicts ({prior[-1].marker} vs {w.marker}) with line {prior[-1].line}: trtx "
                                f"applies both, TensorRT-LLM only this later line"))
        prior.append(w)
    return problems


class WaiveIndex:
    """Waives indexed by test id, so that finding those of one list entry costs a few lookups, not
    a pass over the whole waive file (thousands of waives x hundreds of entries)."""

    def __init__(self, waives: list[Waive]):
        self.with_args: dict[TestRef, list[Waive]] = {}     # apply to the entry with the same id and args
        self.by_id: dict[str, list[Waive]] = {}             # argument-free, by id without a final '/'
        for w in waives:
            if w.ref.pytest_args:
                self.with_args.setdefault(w.ref, []).append(w)
            else:
                self.by_id.setdefault(w.ref.test_id.rstrip("/"), []).append(w)
        self.ids = sorted(self.by_id)

    def for_entry(self, ref: TestRef) -> list[Waive]:
        """The waives that can apply to tests of the list entry `ref`, most specific (longest id)
        first: its own (its id, or its id and pytest arguments), those without pytest arguments
        naming the file, class or function around it, and those naming a test, function, class or
        file inside it. A folder waive applies to the entry that is that folder only, as in
        TensorRT-LLM: not to the folders inside an entry, nor to entries inside it. The plugin gives
        each collected test the first of these that covers it (docs/test-db-and-waives.md, "How a
        waive finds its tests")."""
        entry = ref.test_id.rstrip("/")
        found = list(self.with_args.get(ref, ()))
        # Around it: the entry's id cut where a node id continues a file, class or function.
        for cut in [i for i, ch in enumerate(entry) if ch in ":["]:
            found += self.by_id.get(entry[:cut], ())
        # Its own id: a folder's waive only when it names the entry, pytest arguments included.
        found += [w for w in self.by_id.get(entry, ()) if not names_folder(w.ref.test_id) or names_entry(w.ref, ref)]
        # Inside it: ids that start with the entry's, in sorted order from there; not folders.
        for i in range(bisect.bisect_right(self.ids, entry), len(self.ids)):
            if not self.ids[i].startswith(entry):
                break
            if within(self.ids[i], entry):
                found += [w for w in self.by_id[self.ids[i]] if not names_folder(w.ref.test_id)]
        unique = list(dict.fromkeys(found))
        # Among equals the later line wins: TensorRT-LLM keeps the last of two lines with one name.
        return sorted(unique, key=lambda w: (-len(w.ref.test_id.rstrip("/")), w.ref != ref, -w.line))


def waives_for(ref: TestRef, waives: list[Waive]) -> list[Waive]:
    """WaiveIndex(waives).for_entry(ref): for one entry; build the index once for many."""
    return WaiveIndex(waives).for_entry(ref)
