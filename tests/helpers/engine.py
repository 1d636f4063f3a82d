"""Helpers for the engine's tests, from the engine alone: the engine's tests never import trtx.cli
(tests/unit/engine/test_imports.py checks), so the bundled model's path, its eval set (read here
directly) and one-rank runs over it come from here, not from the harness."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO_ROOT / "models"

PROMPTS = ["The quick brown fox jumps over the lazy dog.", "Ann has 3 coins; Tom has 14.", "x" * 40, "42+17=", "Hi"]


def eval_rows(model_dir, n: int | None = None) -> list[dict]:
    """The first n rows (all with None) of the model's eval.jsonl, blank lines skipped."""
    rows = []
    with open(Path(model_dir) / "eval.jsonl", encoding="utf-8") as f:
        for line in f:
            if n is not None and len(rows) == n:
                break
            if line.strip():
                rows.append(json.loads(line))
    return rows


def grade_last_answer(text: str, answer: int) -> bool:
    """The bundled eval's rule, as `trtx eval` graded before task files (the arith task file must
    keep it): correct when the integer after the output's LAST "Answer:" equals the answer."""
    found = re.findall(r"Answer:\s*(-?\d+)", text)
    return bool(found) and int(found[-1]) == answer


def prompts_of(model_dir, n: int) -> list[str]:
    """The first n prompts of the model's eval set, or fixed text for a checkpoint without one."""
    if (Path(model_dir) / "eval.jsonl").exists():
        return [row["prompt"] for row in eval_rows(model_dir, n)]
    return PROMPTS[:n]


@dataclass
class EvalRun:
    """What a one-rank run over the eval set gives the tests to compare: each sample's token ids
    (samples[i]["token_ids"]), the MTP acceptance statistics (SpecStats.as_dict(), None without
    MTP) and the rank's RankInfo (ranks[0])."""
    samples: list[dict]
    spec: dict | None
    ranks: list


def run_eval(config, n: int, max_tokens: int = 96) -> EvalRun:
    """LLM.from_config(config) on the first n prompts of its model's eval set, greedy, in this
    process: the generation `trtx eval` runs on one rank, without the harness (or its grading)."""
    from trtx.engine import LLM, SamplingParams
    from trtx.engine.speculative import SpecStats

    llm = LLM.from_config(config)
    outs = llm.generate(prompts_of(config.model, n), SamplingParams(max_tokens=max_tokens))
    spec = SpecStats.total(o.spec for o in outs).as_dict() if config.mtp_nextn else None
    return EvalRun(samples=[{"token_ids": o.outputs[0].token_ids} for o in outs], spec=spec, ranks=[llm.rank_info()])
