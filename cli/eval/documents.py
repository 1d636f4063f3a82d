"""A task's rows, made into the documents the evaluator runs: each split's file read and checked
(JSON and JSONL here, line by line; Parquet with `datasets`), every row's prompt rendered after the
few-shot examples, with its reference (generate) or its choices and gold index (multiple choice).
Every error is one UserError naming the file and the line (or row) it is about. The format is in
docs/tasks.md.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..fsutil import read_utf8
from .taskfile import FORMATS, Task, template


@dataclass
class Doc:
    index: int                      # row index in the eval split
    prompt: str                     # few-shot examples + separator + this row's rendered prompt
    target: str | None              # generate: the rendered reference answer
    choices: list[str] | None       # multiple_choice: each continuation, exactly as appended after `prompt`
    gold: int | None                # multiple_choice: the correct index
    row: dict                       # the dataset row
    file: Path | None = None        # where the row is: its file, and its line (JSONL) or None
    line: int | None = None

    def error(self, message: str) -> UserError:
        """An error about this row, naming its file and line."""
        return _row_error(self.file, self.line, self.index, message)


def _row_error(file: Path, line: int | None, index: int, message: str) -> UserError:
    """At the row's line, or as `row N` where rows have no line (Parquet, a JSON array)."""
    if line is None:
        return UserError(f"row {index + 1}: {message}", str(file))
    return UserError(message, str(file), line)


@dataclass
class _Split:
    file: Path
    rows: list[dict]
    lines: list[int | None]         # each row's JSONL line; None where rows have no line (Parquet, a JSON array)

    def error(self, i: int, message: str) -> UserError:
        return _row_error(self.file, self.lines[i], i, message)


def load_docs(task: Task, max_samples: int | None = None, data_path: Path | None = None) -> list[Doc]:
    """The eval split's first `max_samples` rows (all: None) as Docs. `data_path` replaces the eval
    split's file; few-shot examples come from the whole few-shot split."""
    split = _read(task, task.dataset.split, data_path)
    fewshot = task.fewshot
    shots: dict[int, str] = {}
    pool: list[int] = []
    same = fewshot.split == task.dataset.split
    if fewshot.k:
        source = split if same else _read(task, fewshot.split, None)
        # One seeded draw serves every doc; one extra when a doc could be drawn as its own example.
        need = fewshot.k + same
        if len(source.rows) < need:
            raise UserError(f"fewshot.k is {fewshot.k}, but the split {fewshot.split!r} ({source.file}) has "
                            f"{len(source.rows)} rows{' (a doc is never its own example)' if same else ''}",
                            str(task.path), fewshot.line)
        pool = random.Random(fewshot.seed).sample(range(len(source.rows)), need)
        shots = {i: _example(task, source, i) for i in pool}
    n = len(split.rows) if max_samples is None else min(max_samples, len(split.rows))
    docs = []
    for i in range(n):
        examples = [shots[j] for j in pool if not (same and j == i)][:fewshot.k]
        docs.append(_doc(task, split, i, fewshot.separator.join([*examples, _render(split, i, "prompt", task.prompt)])))
    return docs


def _doc(task: Task, split: _Split, i: int, prompt: str) -> Doc:
    row = split.rows[i]
    if not prompt:
        raise split.error(i, "the prompt renders empty: the model needs text to continue")
    if task.generate:
        return Doc(i, prompt, _render(split, i, "generate.target", task.generate.target), None, None, row,
                   split.file, split.lines[i])
    choices, gold = _choices(task, split, i)
    return Doc(i, prompt, None, choices, gold, row, split.file, split.lines[i])


def _example(task: Task, split: _Split, i: int) -> str:
    """Row i as a few-shot example: its prompt followed by its answer."""
    prompt = _render(split, i, "prompt", task.prompt)
    if task.generate:
        return prompt + _render(split, i, "generate.fewshot_target", task.generate.fewshot_target)
    choices, gold = _choices(task, split, i)
    return prompt + choices[gold]


def _render(split: _Split, i: int, key: str, source: str, extra: dict | None = None) -> str:
    row = split.rows[i]
    try:
        return template(source).render({**row, **(extra or {})})
    except Exception as e:      # a user's template can raise anything (a missing field, 1/0, a sandbox refusal)
        fields = ", ".join(row) or "none"
        raise split.error(i, f"cannot render {key}: {_first_line(e)} (the row's fields: {fields})") from None


def _choices(task: Task, split: _Split, i: int) -> tuple[list[str], int]:
    """Row i's continuations (each as appended after the prompt) and the gold index."""
    mc, row = task.multiple_choice, split.rows[i]
    if isinstance(mc.choices, str):
        texts = row.get(mc.choices)
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            found = "no such field" if mc.choices not in row else repr(texts)[:60]
            raise split.error(i, f"multiple_choice.choices: the field {mc.choices!r} must be a non-empty list "
                                 f"of strings, got {found}")
    else:
        texts = [_render(split, i, f"multiple_choice.choices[{n}]", t) for n, t in enumerate(mc.choices)]
    continuations = [_render(split, i, "multiple_choice.continuation", mc.continuation, {"choice": t})
                     for t in texts]
    if "" in continuations:     # acc_norm divides by its length, and an empty one scores nothing
        raise split.error(i, f"multiple_choice: choice {continuations.index('')} renders to an empty continuation")
    if mc.target.isidentifier():
        gold = row.get(mc.target)
        if mc.target not in row or not isinstance(gold, int) or isinstance(gold, bool):
            raise split.error(i, f"multiple_choice.target: the field {mc.target!r} must be an integer index, "
                                 f"got {'no such field' if mc.target not in row else repr(gold)}")
    else:
        text = _render(split, i, "multiple_choice.target", mc.target).strip()
        try:
            gold = int(text)
        except ValueError:
            raise split.error(i, f"multiple_choice.target must render an integer index, got {text!r}") from None
    if not 0 <= gold < len(continuations):
        raise split.error(i, f"multiple_choice.target is {gold}, outside the {len(continuations)} choices "
                             f"(0-{len(continuations) - 1})")
    return continuations, gold


def _read(task: Task, split: str, data_path: Path | None) -> _Split:
    """One split's rows, checked. `data_path` (the eval split's replacement) names errors by itself;
    the task's own file is named by the task file's line that gives it."""
    data_path = Path(data_path) if data_path is not None else None
    file = data_path if data_path is not None and split == task.dataset.split else task.dataset.files[split]
    where = (str(file), None) if file == data_path else (str(task.path), task.dataset.file_lines[split])
    if file.suffix not in FORMATS:
        raise UserError(f"the dataset must be a {', '.join(FORMATS)} file, got {file}", *where)
    if not file.is_file():
        raise UserError(f"no dataset file {file}", *where)
    if FORMATS[file.suffix] == "json":
        result = _Split(file, *_json_rows(file))
    else:
        rows = _load_parquet(file, split)
        result = _Split(file, rows, [None] * len(rows))
    if not result.rows:
        raise UserError(f"the split {split!r} ({file}) has no rows", *where)
    _check_fields(task, result)
    return result


def _json_rows(file: Path) -> tuple[list[dict], list[int | None]]:
    """A JSON file's rows and their lines: JSON Lines (blank lines skipped) or one JSON array of
    objects. Read here, not with datasets: its JSON reader gives a column one inferred type and
    changes values to fit ("2020-01-01" becomes a datetime, "0" beside integers 0, 3 beside 2.5
    3.0), where a template must see the file's own values; and here an error names its line."""
    try:
        text = read_utf8(file)                              # not UTF-8: names the line of the bad byte
    except OSError as e:
        raise UserError(f"cannot read the dataset: {e.strerror}", str(file)) from None
    if file.suffix == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text, object_pairs_hook=_object)
        except json.JSONDecodeError as e:
            raise UserError(f"invalid JSON: {e.msg} (column {e.colno})", str(file), e.lineno) from None
        except DuplicateKey as e:
            raise UserError(f"the key {e} appears twice in one object", str(file)) from None
        for n, item in enumerate(items):
            if not isinstance(item, dict):
                raise UserError(f"row {n + 1}: expected a JSON object, got {json.dumps(item)[:40]}", str(file))
        return items, [None] * len(items)
    rows, lines = [], []
    for number, line in enumerate(text.split("\n"), 1):    # JSONL lines end at \n only
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_object)
        except json.JSONDecodeError as e:
            raise UserError(f"invalid JSON: {e.msg} (column {e.colno})", str(file), number) from None
        except DuplicateKey as e:
            raise UserError(f"the key {e} appears twice in one object", str(file), number) from None
        if not isinstance(row, dict):
            raise UserError(f"expected a JSON object, got {line.strip()[:40]}", str(file), number)
        rows.append(row)
        lines.append(number)
    return rows, lines


class DuplicateKey(ValueError):
    pass


def _object(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are all different (json keeps the last of two silently)."""
    row = dict(pairs)
    if len(row) != len(pairs):
        raise DuplicateKey(repr(next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i]))))
    return row


def _load_parquet(file: Path, split: str) -> list[dict]:
    """A Parquet file's rows, read with datasets (the file's schema gives each column its type)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")      # the file is local: never ask the Hub
    import datasets
    import pyarrow.parquet
    try:
        if pyarrow.parquet.ParquetFile(file).metadata.num_rows == 0:
            return []                    # datasets fails on it; an empty split has its own error
    except Exception as e:
        raise UserError(f"cannot read the dataset: {_first_line(e)}", str(file)) from None
    datasets.disable_progress_bars()
    level = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)     # it would log the error below too
    try:
        return datasets.load_dataset("parquet", data_files={split: str(file)}, split=split).to_list()
    except Exception as e:      # datasets and pyarrow raise many types for an unreadable file
        raise UserError(f"cannot read the dataset: {_first_line(e)}", str(file)) from None
    finally:
        datasets.logging.set_verbosity(level)


def _first_line(e: Exception) -> str:
    """An exception's message as one line (errors are one line)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "list": list}


def _check_fields(task: Task, split: _Split) -> None:
    """Every row has each of the task's dataset.fields, of its JSON type."""
    for i, row in enumerate(split.rows):
        for name, kind in task.dataset.fields.items():
            if name not in row:
                raise split.error(i, f"no {name!r} field (found: {', '.join(row) or 'none'}); the task's "
                                     f"dataset.fields needs {', '.join(task.dataset.fields)}")
            value = row[name]
            if not isinstance(value, _TYPES[kind]) or (isinstance(value, bool) and kind != "boolean"):
                raise split.error(i, f"{name!r} must be {'an' if kind == 'integer' else 'a'} {kind}, "
                                     f"got {repr(value)[:40]}")
