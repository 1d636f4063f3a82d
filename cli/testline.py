"""The grammar shared by test-db entries and waive lines:

    TEST_ID [PYTEST_ARGS ...] [MARKER ...]

TEST_ID is a pytest node id relative to the test root (`dir/file.py::Class::test[param]`, or a
file or folder); the id ends at the first blank outside brackets, so parameters may hold spaces.
PYTEST_ARGS are raw pytest arguments (`-k "expr"`, `-m "mark"`), shell-quoted. Two entries name
the same test when their ids and parsed arguments are equal, however they were quoted.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class TestRef:
    __test__ = False            # a data type, not a pytest test class
    test_id: str
    pytest_args: tuple[str, ...] = ()

    def __str__(self) -> str:
        return " ".join([self.test_id, *(shlex.quote(a) for a in self.pytest_args)])

    @property
    def path(self) -> str:
        """The file or folder part of the id."""
        return self.test_id.split("::", 1)[0]


def split_id(text: str) -> tuple[str, str]:
    """(test id, rest of the line): the id ends at the first whitespace outside [...]."""
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
