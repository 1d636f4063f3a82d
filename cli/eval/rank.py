"""What every rank of `trtx eval --tp N --pp M` runs (started by the launcher):

    python -m trtx.cli.eval.rank OUT

OUT/job.json holds the job as data: the engine configuration (EngineConfig.as_dict(), checked
once already by `trtx eval`), the eval set and how many of its samples to run. Each rank builds
its share of the model and generates for the whole eval set with the others; each writes
OUT/rank-R.json (its RankInfo: layers, tensors, parameter bytes, ...), and rank 0 writes
OUT/result.json (the EvalResult, samples included), which `trtx eval` reads back.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from ..fsutil import atomic_write
from .evaluate import evaluate


def main(argv: list[str]) -> int:
    from trtx.engine.engine_config import EngineConfig

    if len(argv) != 1:
        print("usage: python -m trtx.cli.eval.rank OUT  (OUT/job.json: the job)", file=sys.stderr)
        return 2
    out = Path(argv[0])
    job = json.loads((out / "job.json").read_text())
    result, llm = evaluate(EngineConfig.from_dict(job["engine"]), Path(job["dataset"]), job["max_samples"])
    info = result.ranks[0]
    atomic_write(out / f"rank-{info.rank}.json", json.dumps(dataclasses.asdict(info), indent=1) + "\n")
    if info.rank == 0:
        data = result.as_dict(with_samples=True)
        data["ranks"] = []
        atomic_write(out / "result.json", json.dumps(data) + "\n")
    llm.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
