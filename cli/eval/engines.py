"""Where an evaluation's requests run: the bundled engine in this process (LocalEngine), or on
tp x pp ranks started through the launcher, one job per call (RankEngine: every rank runs
rank.py, which builds its share of the model and runs the call with the others). Both take the
same calls and return the same results, so `trtx eval` and the lm-eval model do not care which.

Prompts and pairs travel as token ids, tokenized here (Tokenizer), so every rank computes on
exactly the ids the harness built.
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

if TYPE_CHECKING:
    from trtx.engine import LLM
    from trtx.engine.engine_config import EngineConfig
    from trtx.engine.outputs import RankInfo


@dataclass
class GenerateCall:
    """Greedy generation for each prompt (token ids)."""
    prompts: list[list[int]]
    max_tokens: int
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False


@dataclass
class ScoreCall:
    """The log-likelihood of each continuation after its context (LLM.score)."""
    pairs: list[tuple[list[int], list[int]]]


@dataclass
class CallResult:
    """What a call gave: per prompt the generated `token_ids` and `text` (GenerateCall), or per
    pair the `logprobs` and `greedy` flags of its tokens (ScoreCall); the wall time of the work
    (not of loading), engine steps, MTP statistics (SpecStats.as_dict(), with MTP) and what each
    rank holds and did."""
    outputs: list[dict]
    seconds: float
    steps: int
    spec: dict | None = None
    ranks: list[RankInfo] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> "CallResult":
        from trtx.engine.outputs import RankInfo
        return cls(**dict(data, ranks=[RankInfo(**r) for r in data.get("ranks", [])]))


Call = GenerateCall | ScoreCall


def call_to_dict(call: Call) -> dict:
    return {"kind": "generate" if isinstance(call, GenerateCall) else "score", **asdict(call)}


def call_from_dict(data: dict) -> Call:
    data = dict(data)
    kind = data.pop("kind")
    return GenerateCall(**data) if kind == "generate" else ScoreCall([tuple(p) for p in data["pairs"]])


def run_call(llm: LLM, call: Call) -> CallResult:
    """One call on an LLM of this process (on each rank of a job: every rank calls it alike)."""
    from trtx.engine import SamplingParams
    from trtx.engine.speculative import SpecStats

    t0, steps0 = time.perf_counter(), llm.engine.num_steps
    if isinstance(call, GenerateCall):
        outs = llm.generate(call.prompts, SamplingParams(max_tokens=call.max_tokens, stop=list(call.stop),
                                                         ignore_eos=call.ignore_eos))
        outputs = [{"token_ids": o.outputs[0].token_ids, "text": o.outputs[0].text} for o in outs]
        spec = SpecStats.total(o.spec for o in outs).as_dict() if llm.config.mtp_nextn else None
    else:
        outputs = [{"logprobs": s.logprobs, "greedy": s.greedy} for s in llm.score(call.pairs)]
        spec = None
    return CallResult(outputs, time.perf_counter() - t0, llm.engine.num_steps - steps0, spec, [llm.rank_info()])


class LocalEngine:
    """The engine in this process, loaded once, for every call."""

    def __init__(self, config: EngineConfig):
        from trtx.engine import LLM
        self.config = config
        self.llm = LLM.from_config(config)

    def run(self, call: Call) -> CallResult:
        return run_call(self.llm, call)

    def close(self) -> None:
        self.llm.shutdown()


class RankEngine:
    """tp x pp ranks through the launcher, a job per call. A job of more CUDA ranks than GPUs
    visible here raises UserError before any rank starts (launch/fit.py); a failed or hung job
    raises RankJobError with the launcher's report. log_dir None: a temporary folder per job,
    removed when it succeeds (a failed job keeps it; the report names it)."""

    def __init__(self, config: EngineConfig, timeout_s: float, log_dir: Path | None = None):
        from ..launch.fit import check_gpu_fit
        check_gpu_fit(config)                    # more CUDA ranks than GPUs: one line, no rank started
        self.config, self.timeout_s, self.log_dir = config, timeout_s, log_dir
        self.jobs = 0

    def run(self, call: Call) -> CallResult:
        from ..launch.launcher import Launch
        temporary = self.log_dir is None
        log_dir = Path(tempfile.mkdtemp(prefix="trtx-eval-")) if temporary else self.log_dir
        self.jobs += 1
        out = log_dir / ("eval" if self.jobs == 1 else f"eval-{self.jobs}")
        out.mkdir(parents=True, exist_ok=True)
        job = {"engine": self.config.as_dict(), "call": call_to_dict(call)}
        atomic_write(out / "job.json", json.dumps(job) + "\n")
        cmd = [sys.executable, "-m", "trtx.cli.eval.rank", str(out)]
        launch = Launch(self.config.world_size, cmd, self.timeout_s, log_dir).run()
        if launch.exit_code != 0:
            raise RankJobError(launch)
        data = json.loads((out / "result.json").read_text())
        data["ranks"] = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(self.config.world_size)]
        if temporary:
            shutil.rmtree(log_dir, ignore_errors=True)
        return CallResult.from_dict(data)

    def close(self) -> None:
        pass


def open_engine(config: EngineConfig, timeout_s: float, log_dir: Path | None = None) -> LocalEngine | RankEngine:
    return LocalEngine(config) if config.world_size == 1 else RankEngine(config, timeout_s, log_dir)


class RankJobError(Exception):
    """A multi-rank job failed or timed out; `.launch` is the launcher's result."""

    def __init__(self, launch):
        self.launch = launch
        super().__init__(launch.summary())
