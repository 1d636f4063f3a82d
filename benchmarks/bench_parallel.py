"""Tensor and pipeline parallelism on CPU ranks: throughput and agreement with one rank, and the
time of a decode step under pp4 against pp1.

    python benchmarks/bench_parallel.py [--configs tp1 tp2 tp4 pp2 pp4 tp2pp2] [--nextn 0 2]
                                        [--max-samples 600]

Part 1 runs the bundled model's eval set (greedy) on every configuration through the launcher and
prints tokens/s (generation only, measured inside the ranks), accuracy, MTP acceptance, and the
share of problems whose output tokens equal the single-rank run's. Part 2 serves 16 problems
with max_num_seqs 1 and 8 on pp1 and pp4 (alternating, best of --repeat) and prints the time
per engine step. On a 2-core machine four ranks share two cores, so tokens/s fall with the rank
count and pipeline stages cannot truly overlap; the numbers mean more on one GPU per rank.
"""
from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from trtx.cli.eval.evaluate import evaluate
from trtx.cli.eval.models import resolve_model, resolve_task
from trtx.engine.engine_config import EngineConfig


def parse(config: str) -> tuple[int, int]:
    m = re.fullmatch(r"(?:tp(\d+))?(?:pp(\d+))?", config)
    if not m or not any(m.groups()):
        raise SystemExit(f"bad configuration {config!r}: expected e.g. tp2, pp4, tp2pp2")
    return int(m.group(1) or 1), int(m.group(2) or 1)


def run(model_dir, data, tp, pp, max_samples, **options):
    config = EngineConfig(model_dir, tensor_parallel_size=tp, pipeline_parallel_size=pp, **options)
    with tempfile.TemporaryDirectory(prefix="trtx-bench-") as logs:
        return evaluate(config, data, max_samples, timeout_s=1800, log_dir=Path(logs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-arith")
    ap.add_argument("--configs", nargs="*", default=["tp1", "tp2", "tp4", "pp2", "pp4", "tp2pp2"],
                    help="part 1's configurations (none: only part 2)")
    ap.add_argument("--nextn", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--max-samples", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3, help="part 2: runs of each, alternating; the best counts")
    args = ap.parse_args()
    model_dir = resolve_model(args.model)
    data = resolve_task(None, model_dir)

    if args.configs:
        print(f"{'config':>8} {'nextn':>5} {'tok/s':>7} {'accuracy':>8} {'accept':>7} {'same as tp1':>12}")
    for k in args.nextn if args.configs else []:
        reference = None
        for config in args.configs:
            tp, pp = parse(config)
            r = run(model_dir, data, tp, pp, args.max_samples, mtp_nextn=k)
            outputs = [s["token_ids"] for s in r.samples]
            reference = reference or outputs
            same = sum(a == b for a, b in zip(outputs, reference)) / len(outputs)
            accept = f"{r.spec['acceptance_rate']:.3f}" if r.spec else "-"
            print(f"{config:>8} {k:>5} {r.tokens_per_s:>7.0f} {r.accuracy:>8.1f} {accept:>7} {100 * same:>11.1f}%",
                  flush=True)

    print(f"\n{'batch':>5} {'pp1 ms/step':>12} {'pp4 ms/step':>12} {'pp4/pp1':>8}")
    for batch in (1, 8):
        best = {1: float("inf"), 4: float("inf")}
        for _ in range(args.repeat):
            for pp in best:
                r = run(model_dir, data, 1, pp, 16, max_num_seqs=batch)
                best[pp] = min(best[pp], r.seconds / r.steps * 1e3)
        print(f"{batch:>5} {best[1]:>12.2f} {best[4]:>12.2f} {best[4] / best[1]:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
