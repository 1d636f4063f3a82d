"""Launch overhead: `trtx launch -n N -- python -c JOB` against a bare `mpirun -n N python -c JOB`,
on 1, 2 and 4 ranks, measured in the same run (best of --repeat, the two alternating), for an
empty job (`pass`, the issue's goal: at most 1.3x) and for a rank that imports torch (what every
real rank does first), with the absolute overhead in milliseconds.

    python benchmarks/bench_launch.py [--ranks 1 2 4] [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd):
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{cmd[:3]} failed: {res.stdout[-500:]}{res.stderr[-500:]}")
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    bin_dir = Path(sys.executable).parent
    mpirun = str(bin_dir / "mpirun") if (bin_dir / "mpirun").exists() else shutil.which("mpirun")
    trtx = shutil.which("trtx", path=str(bin_dir))
    print(f"{'job':>12} {'ranks':>5} {'mpirun s':>9} {'trtx launch s':>14} {'overhead ms':>12} {'ratio':>6}")
    for job in ("pass", "import torch"):
        for n in args.ranks:
            bare = [mpirun, "-n", str(n), "--bind-to", "none"] + (["--allow-run-as-root"] if os.geteuid() == 0 else []) \
                + (["--oversubscribe"] if n > (os.cpu_count() or 1) else []) + [sys.executable, "-c", job]
            with tempfile.TemporaryDirectory() as logs:
                ours = [trtx, "launch", "-n", str(n), "--quiet", "--log-dir", logs, "--", sys.executable, "-c", job]
                t_bare = t_ours = float("inf")
                for _ in range(args.repeat):
                    t_bare = min(t_bare, timed(bare))
                    t_ours = min(t_ours, timed(ours))
            print(f"{job:>12} {n:>5} {t_bare:>9.2f} {t_ours:>14.2f} {1000 * (t_ours - t_bare):>12.0f} "
                  f"{t_ours / t_bare:>5.2f}x")


if __name__ == "__main__":
    main()
