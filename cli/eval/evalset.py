"""Eval sets and grading. An eval set is JSONL with a `prompt` (a string) and an `answer` (a JSON
integer) per line; blank lines are skipped. The model's output is graded by the number after its
last "Answer:"; no such number counts as wrong. The format is in docs/eval.md.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import UserError
from ..fsutil import read_utf8

_ANSWER = re.compile(r"Answer:\s*(-?\d+)")


def check_rows(path: Path) -> int:
    """The number of rows, once every line of the JSONL eval set is blank or an object with a
    non-empty string `prompt` and an integer `answer`; else a UserError naming the line (datasets'
    row index skips blank lines, and it would coerce or reject a bad value without saying where)."""
    rows = 0
    try:
        text = read_utf8(path)                              # not UTF-8: names the line of the bad byte
    except OSError as e:
        raise UserError(f"cannot read the eval set: {e.strerror}", str(path)) from None
    for number, line in enumerate(text.split("\n"), 1):    # JSONL lines end at \n only
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"invalid JSON: {e.msg} (column {e.colno})", str(path), number) from None
        if not isinstance(row, dict):
            raise UserError(f"expected a JSON object with 'prompt' and 'answer', got {line.strip()[:40]}",
                            str(path), number)
        for key in ("prompt", "answer"):
            if key not in row:
                raise UserError(f"no {key!r} field (found: {', '.join(row) or 'none'}); every row needs a "
                                f"'prompt' (a string) and an 'answer' (an integer)", str(path), number)
        if not isinstance(row["prompt"], str) or not row["prompt"]:
            raise UserError(f"'prompt' must be a non-empty string, got {row['prompt']!r}", str(path), number)
        if not isinstance(row["answer"], int) or isinstance(row["answer"], bool):
            raise UserError(f"'answer' must be an integer, got {row['answer']!r}", str(path), number)
        rows += 1
    return rows


def load_problems(path: Path, max_samples: int | None) -> list[dict]:
    """The eval set, checked line by line (check_rows), read through `datasets` (offline: the file
    is local)."""
    if not check_rows(path):
        raise UserError("the eval set is empty", str(path))
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets
    datasets.disable_progress_bars()
    try:
        rows = datasets.load_dataset("json", data_files=str(path), split="train")
    except Exception as e:   # datasets raises several types for unreadable JSON
        raise UserError(f"cannot read the eval set: {e}", str(path)) from None
    if max_samples is not None:
        rows = rows.select(range(min(max_samples, len(rows))))
    return [{"prompt": r["prompt"], "answer": r["answer"]} for r in rows]


def grade(text: str, answer: int) -> bool:
    found = _ANSWER.findall(text)
    return bool(found) and int(found[-1]) == answer
