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

from ..fsutil import atomic_write
from .evalset import grade, load_problems

if TYPE_CHECKING:
    from trtx.engine import LLM
    from trtx.engine.engine_config import EngineConfig
    from trtx.engine.outputs import RankInfo


@dataclass
class EvalResult:
    model: str
    dataset: str
    engine: dict                    # every engine option of the run (EngineConfig.as_dict())
    n: int
    correct: int
    accuracy: float                 # 0-100
    generated_tokens: int
    seconds: float
    tokens_per_s: float
    steps: int = 0                  # engine steps (forwards) the generation took
    spec: dict | None = None        # SpecStats.as_dict(), aggregated over every request (with MTP)
    ranks: list[RankInfo] = field(default_factory=list)    # what each rank holds and did
    samples: list[dict] = field(default_factory=list)

    def as_dict(self, with_samples: bool = False) -> dict:
        d = asdict(self)
        if not with_samples:
            d.pop("samples")
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "EvalResult":
        from trtx.engine.outputs import RankInfo
        return cls(**dict(data, ranks=[RankInfo(**r) for r in data.get("ranks", [])]))


def evaluate(config: EngineConfig, dataset: Path, max_samples: int | None = None,
             max_tokens: int = 96) -> tuple[EvalResult, LLM]:
    """Run the eval set through one LLM, in this process. Under tp x pp every rank of the job
    calls this (see rank.py) and gets the same result. Returns the result and the LLM."""
    from trtx.engine import LLM, SamplingParams
    from trtx.engine.speculative import SpecStats

    problems = load_problems(dataset, max_samples)
    llm = LLM.from_config(config)
    t0, steps0 = time.perf_counter(), llm.engine.num_steps
    outs = llm.generate([p["prompt"] for p in problems], SamplingParams(max_tokens=max_tokens))
    seconds, steps = time.perf_counter() - t0, llm.engine.num_steps - steps0
    samples, correct, tokens = [], 0, 0
    for p, o in zip(problems, outs):
        ok = grade(o.outputs[0].text, p["answer"])
        correct += ok
        tokens += len(o.outputs[0].token_ids)
        samples.append({"prompt": p["prompt"], "answer": p["answer"], "output": o.outputs[0].text,
                        "token_ids": o.outputs[0].token_ids, "correct": ok})
    spec = SpecStats.total(o.spec for o in outs).as_dict() if config.mtp_nextn else None
    result = EvalResult(model=config.model, dataset=str(dataset), engine=config.as_dict(), n=len(problems),
                        correct=correct, accuracy=100.0 * correct / len(problems), generated_tokens=tokens,
                        seconds=seconds, tokens_per_s=tokens / seconds, steps=steps,
                        spec=spec, ranks=[llm.rank_info()], samples=samples)
    return result, llm


def evaluate_on_ranks(config: EngineConfig, dataset: Path, timeout_s: float, log_dir: Path | None,
                      max_samples: int | None = None) -> EvalResult:
    """Run the eval on tp x pp ranks through the launcher (cli/eval/rank.py on every rank, which
    receives the configuration as data) and collect the result. A job of more CUDA ranks than
    GPUs visible here raises UserError before any rank starts (launch/fit.py); a failed or hung
    job raises RankJobError with the launcher's report. log_dir None: a temporary folder, removed
    when the job succeeds (a failed job keeps it; the launcher's report names it)."""
    from ..launch.fit import check_gpu_fit
    from ..launch.launcher import Launch
    load_problems(dataset, max_samples)          # a bad eval set fails here, once, not on N ranks
    check_gpu_fit(config)                        # more CUDA ranks than GPUs: one line, no rank started
    temporary = log_dir is None
    if temporary:
        log_dir = Path(tempfile.mkdtemp(prefix="trtx-eval-"))
    out = log_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    job = {"engine": config.as_dict(), "dataset": str(dataset), "max_samples": max_samples}
    atomic_write(out / "job.json", json.dumps(job, indent=1) + "\n")
    cmd = [sys.executable, "-m", "trtx.cli.eval.rank", str(out)]
    launch = Launch(config.world_size, cmd, timeout_s, log_dir).run()
    if launch.exit_code != 0:
        raise RankJobError(launch)
    data = json.loads((out / "result.json").read_text())
    data["ranks"] = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(config.world_size)]
    if temporary:
        shutil.rmtree(log_dir, ignore_errors=True)
    return EvalResult.from_dict(data)


class RankJobError(Exception):
    """A multi-rank eval job failed or timed out; `.launch` is the launcher's result."""

    def __init__(self, launch):
        self.launch = launch
        super().__init__(launch.summary())
