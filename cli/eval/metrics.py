"""Scoring a task's docs: for generation, each filter's extraction from the output, normalised and
compared with the reference (exact_match,<filter>); for multiple choice, acc, acc_norm and
exact_match from the choices' log-probabilities; and the mean over docs. The metrics are defined in
docs/tasks.md.
"""
from __future__ import annotations

import re
from decimal import Decimal

from .documents import Doc
from .taskfile import Filter, Task

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")


def extract(f: Filter, text: str) -> str:
    """What filter `f` takes from the output: the chosen match of its regex's group (the whole
    output without a regex), or its fallback when nothing matches."""
    if f.regex is None:
        return text
    # A group that did not take part in a match (one side of an alternation) is no match.
    found = [g for m in re.finditer(f.regex, text) if (g := m.group(f.group)) is not None]
    if not found:
        return f.fallback
    return found[0] if f.take == "first" else found[-1]


def extracted(task: Task, text: str) -> dict[str, str]:
    """Filter name -> what it extracted from the output."""
    return {f.name: extract(f, text) for f in task.generate.filters}


def normalize(text: str, how: str) -> str | Decimal:
    """text: stripped, case-folded, runs of whitespace as one space. numeric: without whitespace,
    ',' and '$' and a trailing '.', a number when what is left is one ("1,000" and "1000.0" are
    both 1000), else that string."""
    if how == "text":
        return " ".join(text.split()).casefold()
    if how == "numeric":
        s = re.sub(r"[\s,$]", "", text).removesuffix(".")
        return Decimal(s) if _NUMBER.fullmatch(s) else s
    return text


def score_generation(task: Task, doc: Doc, text: str) -> dict[str, float]:
    """exact_match,<filter> for each filter: 1.0 when its extraction equals the reference once both
    are normalised, else 0.0."""
    gen = task.generate
    gold = normalize(doc.target, gen.normalize)
    return {f"exact_match,{name}": float(normalize(value, gen.normalize) == gold)
            for name, value in extracted(task, text).items()}


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)       # ties: the first, as numpy's argmax


def score_choices(doc: Doc, logprobs: list[float], greedy: list[bool]) -> dict[str, float]:
    """logprobs[i]: the summed log-probability of choice i's continuation after the prompt;
    greedy[i]: whether greedy decoding produces that continuation. acc: the most probable choice is
    the gold one; acc_norm: the same per UTF-8 byte of the continuation; exact_match: the gold
    continuation is the greedy one."""
    if not len(logprobs) == len(greedy) == len(doc.choices):
        raise ValueError(f"{len(doc.choices)} choices, {len(logprobs)} log-probabilities, {len(greedy)} greedy flags")
    per_byte = [lp / len(c.encode()) for lp, c in zip(logprobs, doc.choices)]
    return {"acc": float(_argmax(logprobs) == doc.gold), "acc_norm": float(_argmax(per_byte) == doc.gold),
            "exact_match": float(greedy[doc.gold])}


def aggregate(per_doc: list[dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over the docs, on the 0-100 scale."""
    if not per_doc:
        return {}
    return {name: 100.0 * sum(d[name] for d in per_doc) / len(per_doc) for name in per_doc[0]}
