"""User-input errors: one line, with the file and line when there is one. The CLI prints them and
exits with code 2, never with a traceback."""
from __future__ import annotations

import difflib


class UserError(Exception):
    exit_code = 2

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.message, self.path, self.line = message, path, line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path:
            where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        return where + self.message


def closest_names(name: str, candidates, n: int = 3, cutoff: float = 0.4) -> list[str]:
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=cutoff)


def closest(name: str, candidates, n: int = 3) -> str:
    """' (did you mean: a, b, c?)' for the closest candidates, or '' when none is close."""
    near = closest_names(name, candidates, n)
    return f" (did you mean: {', '.join(near)}?)" if near else ""
