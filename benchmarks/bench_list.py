"""Time `trtx list` over a generated test-db of 10,000 tests with a 5,000-line waive file.

    python benchmarks/bench_list.py [--tests 10000] [--waives 5000] [--repeat 5]

Prints the wall time of the whole command (process start included), best of --repeat, beside
`trtx --version` measured in the same run: the difference is the work `list` itself does. Goal:
under 1 s.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate(root: Path, n_tests: int, n_waives: int) -> None:
    (root / "test-db").mkdir()
    per_block = 100
    lines = ["version: 0.0.1", "l0_big:"]
    for b in range(n_tests // per_block):
        gpus = b % 8 + 1
        lines += ["- condition:", "    ranges:", "      system_gpu_count:", f"        gte: {gpus}", f"        lte: {gpus}",
                  "    wildcards:", "      gpu:", "      - '*b200*'", "      - '*h100*'",
                  "      linux_distribution_name: debian*", "    terms:", "      stage: pre_merge", "  tests:"]
        for t in range(per_block):
            marker = " TIMEOUT (60)" if t % 7 == 0 else ""
            lines.append(f"  - accuracy/test_m{b}.py::TestModel{b}::test_case[tp{t % 8}-mtp_nextn={t % 4}-n{t}]{marker}")
    (root / "test-db" / "big.yml").write_text("\n".join(lines) + "\n")
    waives = ["# generated waive file"]
    for w in range(n_waives):
        b, t = w % (n_tests // per_block), w % per_block
        waives.append(f"accuracy/test_m{b}.py::TestModel{b}::test_case[tp{t % 8}-mtp_nextn={t % 4}-n{w}] "
                      f"SKIP (https://bugs.example/{w})")
    (root / "waives.txt").write_text("\n".join(waives) + "\n")


def best(cmd, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if res.returncode != 0:
            sys.exit(f"{cmd} failed: {res.stderr}")
    return min(times), res.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tests", type=int, default=10000)
    ap.add_argument("--waives", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    trtx = shutil.which("trtx", path=str(Path(sys.executable).parent)) or "trtx"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, args.tests, args.waives)
        base, _ = best([trtx, "--version"], args.repeat)
        common = ["--testdb", str(root / "test-db"), "--waives-file", str(root / "waives.txt"),
                  "--match", "gpu=B200", "--match", "stage=pre_merge"]
        rows = []
        for gpus in ("1", "8"):
            t, out = best([trtx, "list", "l0_big", "--markers", "--match", f"system_gpu_count={gpus}", *common],
                          args.repeat)
            rows.append((gpus, t, len(out.splitlines()), out.count("waived:")))
    print(f"test-db: {args.tests} tests in {args.tests // 100} blocks; waive file: {args.waives} lines")
    print(f"trtx --version (process start, imports): {base * 1e3:.0f} ms")
    for gpus, t, n, waived in rows:
        print(f"trtx list --markers, system_gpu_count={gpus}: {t * 1e3:.0f} ms "
              f"({n} tests listed, {waived} waived; list's own work {(t - base) * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
