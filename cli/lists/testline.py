"""The line grammar shared by test-db entries and waive lines, read as TensorRT-LLM's
test_list_parser reads them:

    [full:PLATFORM/]TEST_TEXT MARKER [(VALUE)]   # comment

1. `#` starts a comment anywhere in the line, even inside brackets or quotes.
2. The marker is found as ` MARKER` (a space, then the word) anywhere in what is left, trying the
   markers in the order of MARKERS; the first one found ends TEST_TEXT at its first occurrence.
   So `TIMEOUT(60)` and `TIMEOUT (60)` both read as a timeout of 60 minutes.

TEST_TEXT is a pytest node id relative to the test root (`dir/file.py::Class::test[param]`, or a
file or folder; the id ends at the first blank outside brackets, so parameters may hold spaces),
then raw pytest arguments (`-k "expr"`), shell-quoted. Two entries name the same test when their
ids and parsed arguments are equal, however they were quoted; each prints as it was written.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

MARKERS = ("XFAIL", "SKIP", "UNSTABLE", "TIMEOUT", "ISOLATION")     # TensorRT-LLM's search order
MINUTES = re.compile(r"\((\d+(?:\.\d+)?)\)")                         # TIMEOUT's value: (60)


@dataclass(frozen=True)
class TestRef:
    __test__ = False            # a data type, not a pytest test class
    test_id: str
    pytest_args: tuple[str, ...] = ()
    text: str = field(default="", compare=False)     # as written; not part of the identity

    def __str__(self) -> str:
        """The entry as written (what TensorRT-LLM's rendered lists show), else a quoted form."""
        return self.text or " ".join([self.test_id, *(shlex.quote(a) for a in self.pytest_args)])

    @property
    def path(self) -> str:
        """The file or folder part of the id."""
        return self.test_id.split("::", 1)[0]


@dataclass(frozen=True)
class Line:
    text: str                   # the test text: comment, marker and what follows removed
    marker: str | None
    rest: str                   # what follows the marker, stripped


def split_line(raw: str) -> Line | None:
    """A line cut at its comment and its marker; None when nothing is left but blanks."""
    content = raw.partition("#")[0].strip()
    if not content:
        return None
    for marker in MARKERS:
        at = content.find(" " + marker)
        if at >= 0:
            return Line(content[:at].strip(), marker, content[at + 1 + len(marker):].strip())
    return Line(content, None, "")


def parse_ref(text: str) -> TestRef:
    """'dir/f.py::t[p] -k "expr"' -> TestRef; ValueError on an unclosed bracket or quote."""
    test_id, rest = split_id(text.strip())
    if test_id.count("[") > test_id.count("]"):
        raise ValueError(f"{test_id}: unclosed '[' in the test id ('#' starts a comment anywhere, "
                         "even inside brackets, as TensorRT-LLM reads lists)")
    return TestRef(test_id, tuple(shell_words(rest)), text.strip())


_FIRST_BLANK = re.compile(r"\s")
_FLAT_BRACKETS = re.compile(r"[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*")     # a[b]c[d]: no nesting, all closed


def within(test_id: str, outer: str) -> bool:
    """Whether the pytest id `test_id` is `outer` or lies inside it: `outer` names a folder (with or
    without a final `/`), a file, a class, or a function (whose parametrized tests are `outer[...]`).
    Fast on a mismatch (one startswith): `trtx run` and `list --markers` ask it for every entry and waive."""
    outer = outer.rstrip("/")
    return test_id.startswith(outer) and test_id[len(outer):len(outer) + 1] in ("", ":", "[", "/")


def waive_covers(test_id: str, waive_id: str) -> bool:
    """Whether a waive without pytest arguments naming `waive_id` covers the collected test
    `test_id`: the test itself, or its function, class or file, as TensorRT-LLM matches waives to
    collected tests (node id, then without its [...] parameters, then without its last `::` part,
    again and again). Never a folder: there a folder waive applies only to the list entry that is
    that folder (see names_entry)."""
    return test_id.startswith(waive_id) and test_id[len(waive_id):len(waive_id) + 1] in ("", ":", "[")


def names_entry(waive: TestRef, entry: TestRef) -> bool:
    """Whether a waive names the list entry itself, id and pytest arguments: then the whole entry is
    waived, whatever it collects (TensorRT-LLM waives an entry run as one test, a folder included,
    by its own text). A waive without the entry's arguments reaches its tests only through
    waive_covers."""
    return waive.test_id.rstrip("/") == entry.test_id.rstrip("/") and waive.pytest_args == entry.pytest_args


def names_folder(test_id: str) -> bool:
    """Whether an id names a folder: it ends in `/`, or has no `::` and no `.py` file at its end."""
    return test_id.endswith("/") or ("::" not in test_id and not test_id.endswith(".py"))


def split_id(text: str) -> tuple[str, str]:
    """(test id, rest of the line): the id ends at the first whitespace outside [...]."""
    blank = _FIRST_BLANK.search(text)
    if blank is None:
        return text, ""
    head = text[:blank.start()]
    if _FLAT_BRACKETS.fullmatch(head):       # the common case, without a loop over characters
        return head, text[blank.end():].strip()
    depth = 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(depth - 1, 0)
        elif ch.isspace() and depth == 0:
            return text[:i], text[i:].strip()
    return text, ""


def shell_words(text: str) -> list[str]:
    if not any(c in text for c in "'\"\\"):        # nothing quoted: skip shlex, 20x slower
        return text.split()
    try:
        return shlex.split(text)
    except ValueError as e:                       # unbalanced quotes
        raise ValueError(f"cannot split {text!r}: {e}") from None
