"""Accuracy and MTP acceptance of one engine configuration on an eval set (what `trtx eval` runs):
in this process (evaluate), or on tp x pp ranks through the launcher, each rank running rank.py
(evaluate_on_ranks). Eval sets and grading are in evalset.py, the bundled models in models.py.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .evalset import grade, load_problems

if TYPE_CHECKING:
    from trtx.engine import LLM


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
    calls this (see rank.py) and gets the same result. Returns the result and the LLM."""
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
    """Run the eval on tp x pp ranks through the launcher (cli/eval/rank.py on every rank) and
    collect the result. A failed or hung job raises RankJobError with the launcher's report.
    log_dir None: a temporary folder, removed when the job succeeds (a failed job keeps it; the
    launcher's report names it)."""
    from trtx.engine.config import ModelConfig
    from trtx.engine.parallel import check_layout

    from ..launch.launcher import Launch
    # Bad input fails here, once, not on N ranks.
    check_layout(ModelConfig.from_dir(model_dir), tp, pp, options.get("adp", False))
    load_problems(dataset, options.get("max_samples"))
    temporary = log_dir is None
    if temporary:
        log_dir = Path(tempfile.mkdtemp(prefix="trtx-eval-"))
    out = log_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "trtx.cli.eval.rank", "--model", str(model_dir), "--dataset", str(dataset),
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
