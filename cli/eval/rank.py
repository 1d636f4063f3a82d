"""What every rank of a multi-rank evaluation job runs (started by the launcher, engines.RankEngine):

    python -m trtx.cli.eval.rank OUT

OUT/job.json holds the job as data: the engine configuration (EngineConfig.as_dict(), checked
once already by the harness) and one call (engines.GenerateCall or ScoreCall, as token ids).
Each rank builds its share of the model and runs the call with the others; each writes
OUT/rank-R.json (its RankInfo: layers, tensors, parameter bytes, ...), and rank 0 writes
OUT/result.json (the CallResult), which the harness reads back.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from ..fsutil import atomic_write
from .engines import call_from_dict, run_call


def main(argv: list[str]) -> int:
    from trtx.engine import LLM
    from trtx.engine.engine_config import EngineConfig

    if len(argv) != 1:
        print("usage: python -m trtx.cli.eval.rank OUT  (OUT/job.json: the job)", file=sys.stderr)
        return 2
    out = Path(argv[0])
    job = json.loads((out / "job.json").read_text())
    llm = LLM.from_config(EngineConfig.from_dict(job["engine"]))
    result = run_call(llm, call_from_dict(job["call"]))
    info = result.ranks[0]
    atomic_write(out / f"rank-{info.rank}.json", json.dumps(dataclasses.asdict(info), indent=1) + "\n")
    if info.rank == 0:
        data = dataclasses.asdict(result)
        data["ranks"] = []
        atomic_write(out / "result.json", json.dumps(data) + "\n")
    llm.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
