"""Accuracy and MTP acceptance of one engine configuration on an eval set (what `trtx eval` runs).

An eval set is JSONL with a `prompt` (a string) and an `answer` (a JSON integer) per line; blank
lines are skipped. The model's output is graded by the number after its last "Answer:"; no such
number counts as wrong. The format is in docs/eval.md.

Bundled models live in models/<name>/ (checkpoint plus eval.jsonl) and are addressed by name.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError, closest
from .fsutil import read_utf8
from .options import REPO_ROOT

if TYPE_CHECKING:
    from trtx.engine import LLM

MODELS_DIR = REPO_ROOT / "models"
_ANSWER = re.compile(r"Answer:\s*(-?\d+)")


def bundled_models() -> list[str]:
    return sorted(p.parent.name for p in MODELS_DIR.glob("*/config.json"))


def resolve_model(name_or_dir: str) -> Path:
    """A checkpoint directory, or the directory of the bundled model of that name."""
    path = Path(name_or_dir)
    if (path / "config.json").exists():
        return path
    if name_or_dir in bundled_models():
        return MODELS_DIR / name_or_dir
    raise UserError(f"--model {name_or_dir!r} is neither a checkpoint directory (no config.json) nor a bundled "
                    f"model ({', '.join(bundled_models()) or 'none'}){closest(name_or_dir, bundled_models())}")


def default_dataset(model_dir: Path) -> Path:
    path = model_dir / "eval.jsonl"
    if not path.exists():
        raise UserError(f"{model_dir} has no eval.jsonl; pass --dataset")
    return path


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


@dataclass
class EvalResult:
    model: str
    dataset: str
    n: int
    correct: int
    accuracy: float                 # 0-100
    mtp_nextn: int
    generated_tokens: int
    seconds: float
    tokens_per_s: float
    steps: int = 0                  # engine steps (forwards) the generation took
    tp: int = 1
    pp: int = 1
    adp: bool = False               # attention data parallel across the tp ranks
    spec: dict | None = None        # SpecStats.as_dict(), aggregated over every request
    ranks: list[dict] = field(default_factory=list)    # what each rank holds (LLM.rank_info())
    samples: list[dict] = field(default_factory=list)

    def as_dict(self, with_samples: bool = False) -> dict:
        d = asdict(self)
        if not with_samples:
            d.pop("samples")
        return d


def evaluate(model_dir: Path, dataset: Path, mtp_nextn: int = 0, max_samples: int | None = None,
             max_num_seqs: int = 64, max_tokens: int = 96, device: str | None = None,
             tp: int = 1, pp: int = 1, adp: bool = False, warmup: bool = False,
             warmup_oom: str = "skip", graphs: bool = False) -> tuple[EvalResult, LLM]:
    """Run the eval set through one LLM, in this process. Under tp x pp every rank of the job
    calls this (see eval_rank.py) and gets the same result. Returns the result and the LLM."""
    from trtx.engine import LLM, SamplingParams
    from trtx.engine.speculative import SpecStats

    problems = load_problems(dataset, max_samples)
    llm = LLM(model_dir, tensor_parallel_size=tp, pipeline_parallel_size=pp, enable_attention_dp=adp,
              mtp_nextn=mtp_nextn, max_num_seqs=max_num_seqs, device=device, warmup=warmup, on_warmup_oom=warmup_oom,
              decode_graphs=graphs)
    t0, steps0 = time.perf_counter(), llm.engine.num_steps
    outs = llm.generate([p["prompt"] for p in problems], SamplingParams(max_tokens=max_tokens))
    seconds, steps = time.perf_counter() - t0, llm.engine.num_steps - steps0
    spec = SpecStats()
    samples, correct, tokens = [], 0, 0
    for p, o in zip(problems, outs):
        ok = grade(o.outputs[0].text, p["answer"])
        correct += ok
        tokens += len(o.outputs[0].token_ids)
        if o.spec is not None:
            spec.merge(o.spec)
        samples.append({"prompt": p["prompt"], "answer": p["answer"], "output": o.outputs[0].text,
                        "token_ids": o.outputs[0].token_ids, "correct": ok})
    result = EvalResult(model=str(model_dir), dataset=str(dataset), n=len(problems), correct=correct,
                        accuracy=100.0 * correct / len(problems), mtp_nextn=mtp_nextn, generated_tokens=tokens,
                        seconds=seconds, tokens_per_s=tokens / seconds, steps=steps, tp=tp, pp=pp, adp=adp,
                        spec=spec.as_dict() if mtp_nextn else None, ranks=[llm.rank_info()], samples=samples)
    return result, llm


def evaluate_on_ranks(model_dir: Path, dataset: Path, tp: int, pp: int, timeout_s: float, log_dir: Path | None,
                      **options) -> EvalResult:
    """Run the eval on tp x pp ranks through the launcher (cli/eval_rank.py on every rank) and
    collect the result. A failed or hung job raises RankJobError with the launcher's report.
    log_dir None: a temporary folder, removed when the job succeeds (a failed job keeps it; the
    launcher's report names it)."""
    from trtx.engine.config import ModelConfig
    from trtx.engine.parallel import check_layout

    from .launcher import Launch
    # Bad input fails here, once, not on N ranks.
    check_layout(ModelConfig.from_dir(model_dir), tp, pp, options.get("adp", False))
    load_problems(dataset, options.get("max_samples"))
    temporary = log_dir is None
    if temporary:
        log_dir = Path(tempfile.mkdtemp(prefix="trtx-eval-"))
    out = log_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "trtx.cli.eval_rank", "--model", str(model_dir), "--dataset", str(dataset),
           "--tp", str(tp), "--pp", str(pp), "--out", str(out)]
    for name, value in options.items():
        flag = f"--{name.replace('_', '-')}"
        if value is True:
            cmd.append(flag)
        elif value not in (None, False):
            cmd += [flag, str(value)]
    launch = Launch(tp * pp, cmd, timeout_s, log_dir).run()
    if launch.exit_code != 0:
        raise RankJobError(launch)
    data = json.loads((out / "result.json").read_text())
    data["ranks"] = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(tp * pp)]
    if temporary:
        shutil.rmtree(log_dir, ignore_errors=True)
    return EvalResult(**data)


class RankJobError(Exception):
    """A multi-rank eval job failed or timed out; `.launch` is the launcher's result."""

    def __init__(self, launch):
        self.launch = launch
        super().__init__(launch.summary())
