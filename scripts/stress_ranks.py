"""Stress the multi-rank start and teardown: run short multi-rank jobs many times each, with CPU
hogs beside them, and count the runs that did not end cleanly.

    python scripts/stress_ranks.py [--runs 50] [--hogs 2] [--only tp2-bias tp4-bias eval-tp4 launch-4]

Jobs (each through the installed `trtx` console script, as a user runs them):
  tp2-bias   `trtx launch -n 2`: tests/jobs/logits_job.py on a random Qwen2 with QKV bias (tp2)
  tp4-bias   `trtx launch -n 4`: the same on a random Llama with attention and MLP biases (tp4)
  eval-tp4   `trtx eval --tp 4 --max-samples 8` on the bundled model
  launch-4   `trtx launch -n 4`: tests/jobs/collective_job.py ok (init, all-reduce, destroy)

A run counts as an abort when a rank died on a signal or its log says "terminate called", and as
a failure for any other non-zero exit. Logs of runs that did not end cleanly are kept under
--keep; the rest are removed. Needs the `test` extra (transformers writes the bias checkpoints).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRTX = str(Path(sys.executable).parent / "trtx")
LOGITS_JOB = str(ROOT / "tests" / "jobs" / "logits_job.py")
COLLECTIVE_JOB = str(ROOT / "tests" / "jobs" / "collective_job.py")
NOT_DESTROYED = "destroy_process_group() was not called"
JOBS = ("tp2-bias", "tp4-bias", "eval-tp4", "launch-4")


def hog(stop):
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def test_helper(name: str):
    """tests/helpers/NAME.py, loaded by its path (tests/ is a package of the repository, not installed)."""
    spec = importlib.util.spec_from_file_location(f"stress_{name}", ROOT / "tests" / "helpers" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module           # as an import would (dataclasses look it up there)
    spec.loader.exec_module(module)
    return module


def bias_checkpoints(work: Path) -> dict[str, Path]:
    """The two random bias checkpoints, and the prompts their logits job runs (PROMPTS.json)."""
    make_checkpoint = test_helper("checkpoints").make_checkpoint
    checkpoints = {"tp2-bias": make_checkpoint(work / "qwen2", "qwen2"),
                   "tp4-bias": make_checkpoint(work / "llama", "llama", attention_bias=True, mlp_bias=True)}
    (work / "prompts.json").write_text(json.dumps(test_helper("engine").prompts_of(checkpoints["tp2-bias"], 8)))
    return checkpoints


def command(job: str, logs: Path, checkpoints: dict[str, Path], work: Path) -> list[str]:
    if job in ("tp2-bias", "tp4-bias"):
        n = job[2]
        return [TRTX, "launch", "-n", n, "--quiet", "--timeout", "300", "--log-dir", str(logs), "--",
                sys.executable, LOGITS_JOB, str(checkpoints[job]), n, "1", str(work / "logits.pt"),
                str(work / "prompts.json")]
    if job == "eval-tp4":
        return [TRTX, "eval", "--tp", "4", "--max-samples", "8", "--timeout", "300", "--log-dir", str(logs)]
    return [TRTX, "launch", "-n", "4", "--quiet", "--timeout", "300", "--log-dir", str(logs), "--",
            sys.executable, COLLECTIVE_JOB, "ok"]


def classify(code: int, logs: Path) -> str:
    """ok, abort (a rank died on a signal or std::terminate ran) or failed."""
    texts = [p.read_text(errors="replace") for p in logs.glob("rank-*.log")]
    exits = [p.read_text().strip() for p in logs.glob("rank-*.exit")]
    if any(e.startswith("-") for e in exits) or any("terminate called" in t for t in texts):
        return "abort"
    return "ok" if code == 0 else "failed"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50, help="runs of each job")
    ap.add_argument("--hogs", type=int, default=os.cpu_count() or 1, help="busy processes beside the jobs")
    ap.add_argument("--only", nargs="+", choices=JOBS, default=list(JOBS))
    ap.add_argument("--keep", type=Path, default=Path("stress-logs"), help="where failed runs' logs are kept")
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # still stop the hogs and clean up
    work = Path(tempfile.mkdtemp(prefix="trtx-stress-"))
    stop = multiprocessing.Event()
    hogs = [multiprocessing.Process(target=hog, args=(stop,), daemon=True) for _ in range(args.hogs)]
    try:
        checkpoints = bias_checkpoints(work) if {"tp2-bias", "tp4-bias"} & set(args.only) else {}
        for h in hogs:
            h.start()
        counts = {job: {"ok": 0, "abort": 0, "failed": 0, "not_destroyed": 0, "seconds": 0.0} for job in args.only}
        for i in range(args.runs):
            for job in args.only:            # interleaved: every job meets the same load over time
                logs = work / f"{job}-{i}"
                t0 = time.monotonic()
                res = subprocess.run(command(job, logs, checkpoints, work), capture_output=True, text=True,
                                     stdin=subprocess.DEVNULL, timeout=600)
                c = counts[job]
                c["seconds"] += time.monotonic() - t0
                verdict = classify(res.returncode, logs)
                c[verdict] += 1
                c["not_destroyed"] += any(NOT_DESTROYED in p.read_text(errors="replace")
                                          for p in logs.glob("rank-*.log"))
                if verdict != "ok":
                    args.keep.mkdir(parents=True, exist_ok=True)
                    (logs / "command-output.txt").write_text(res.stdout + res.stderr)
                    shutil.copytree(logs, args.keep / logs.name, dirs_exist_ok=True)
                    print(f"run {i + 1} {job}: {verdict} (exit {res.returncode}); logs in {args.keep / logs.name}",
                          flush=True)
                shutil.rmtree(logs, ignore_errors=True)
            print(f"{i + 1}/{args.runs} rounds: " + ", ".join(f"{j} {c['abort']} aborts {c['failed']} failed"
                                                               for j, c in counts.items()), flush=True)
    finally:
        stop.set()
        for h in hogs:
            h.join(timeout=5)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'job':10} {'runs':>5} {'aborts':>7} {'failed':>7} {'not destroyed':>14} {'s/run':>6}")
    for job, c in counts.items():
        print(f"{job:10} {args.runs:5} {c['abort']:7} {c['failed']:7} {c['not_destroyed']:14} "
              f"{c['seconds'] / args.runs:6.1f}")
    return 1 if any(c["abort"] or c["failed"] for c in counts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
