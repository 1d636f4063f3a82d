"""How well the accuracy gate works, measured: its false-red rate on an unchanged engine and its
detection rate for a planted regression of theta points, at n = 100, 200 and 600 documents.

    python benchmarks/bench_gate.py [--seeds 20] [--temperature 0.7] [--n 100 --n 200 --n 600]
                                    [--json OUT] [--threads 1]

The bundled model's default task (tiny-arith, arith) runs on one rank in this process, sampled at
--temperature with a seed per request (from the run's seed and the document's index), so each run
seed is one independent eval run. Every run of one configuration goes into one generate call.

  unchanged  --seeds runs over the first max(n) documents; a run at n is its first n documents
             (what a run with --max-samples n computes). The gate's reference at n is the mean
             of these runs (a well-measured reference).
  planted    per n, --seeds more runs of the first n documents with the fault early_eos:Q
             (engine/faults.py: a request cut short after its first token), Q = theta_n / ref,
             so the expected drop is theta_n: the smallest drop the gate promises to detect with
             power 1 - beta.

theta_n and the threshold are AccuracyGate's (cli/eval/gate.py) with its defaults (alpha 0.05,
beta 0.2, sigma 50). False red: the share of unchanged runs below the threshold (goal <= alpha);
detection: the share of planted runs below it (goal >= 1 - beta); each with its one-sided 95%
Clopper-Pearson bound, since --seeds is finite. Also printed: the runs' standard deviation and
the per-sample sigma it implies (sd x sqrt(n)) against the assumed 50; the rates a normal model
with the measured standard deviations predicts; the two-sample variant (the reference is one
other seed's single run, the case the gate's scale sqrt(2 sigma^2 / n) is designed for); and,
for a goal not met, the (sigma, n) that would meet it. Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from statistics import NormalDist

import torch

from trtx.cli.eval.documents import load_docs
from trtx.cli.eval.evaluate import Prompts
from trtx.cli.eval.gate import AccuracyGate
from trtx.cli.eval.metrics import score_generation
from trtx.cli.eval.models import resolve_model, resolve_task
from trtx.cli.eval.taskfile import load_task
from trtx.engine import LLM, SamplingParams
from trtx.engine.config import ModelConfig

MAX_NUM_SEQS = 256          # the fastest batch here for this model (64: 44 prompts/s, 256: 55, 512: 38)
CONFIDENCE = 0.95           # of the bounds on the rates


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20, help="runs per configuration (default 20: about 10 min "
                                                          "on one CPU thread)")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--n", type=int, action="append", help="documents per run, repeatable (default 100 200 600)")
    ap.add_argument("--json", metavar="OUT", help="write every number to this file")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()
    args.n = sorted(set(args.n or [100, 200, 600]))
    if args.seeds < 2 or args.temperature <= 0 or args.n[0] < 1:
        ap.error("--seeds must be >= 2 (the two-sample variant pairs runs), --temperature > 0, --n >= 1")
    return args


class Runs:
    """The task's documents on the bundled model: per run seed, each document's 0/1 score on the
    task's primary metric."""

    def __init__(self, num_docs: int, temperature: float):
        self.model_dir = resolve_model("tiny-arith")
        self.task = load_task(resolve_task(None, self.model_dir))
        self.docs = load_docs(self.task, num_docs)
        self.metric = self.task.metric_names[0]
        self.temperature = temperature
        max_positions = ModelConfig.from_dir(self.model_dir).max_position_embeddings
        prompts = Prompts(str(self.model_dir), None, max_positions)
        self.prompts = [prompts.ids(d) for d in self.docs]
        self.timings: list[dict] = []            # per configuration: its name, prompts and seconds

    def correct(self, name: str, faults: str, run_seeds: list[int], n: int) -> list[list[float]]:
        """Per run seed, the first n documents' scores, under TRTX_FAULTS value `faults` ("": none,
        whatever the environment says). One generate call for all runs: they batch together."""
        llm = LLM(self.model_dir, faults=faults, max_num_seqs=MAX_NUM_SEQS)
        gen, docs = self.task.generate, self.docs[:n]
        # Request seeds are distinct for every (run, document): runs are independent draws.
        params = [SamplingParams(temperature=self.temperature, max_tokens=gen.max_tokens, stop=list(gen.stop),
                                 seed=seed * len(self.docs) + d.index) for seed in run_seeds for d in docs]
        print(f"{name}: {len(params)} prompts ({len(run_seeds)} runs x {n} documents) started", file=sys.stderr)
        t0 = time.perf_counter()
        outs = llm.generate(self.prompts[:n] * len(run_seeds), params)
        seconds = time.perf_counter() - t0
        print(f"{name}: {len(params) / seconds:.1f} prompts/s, {seconds:.1f} s", file=sys.stderr)
        self.timings.append({"configuration": name, "prompts": len(params), "seconds": seconds})
        scores = [score_generation(self.task, d, o.outputs[0].text)[self.metric]
                  for d, o in zip(docs * len(run_seeds), outs)]
        return [scores[i * n:(i + 1) * n] for i in range(len(run_seeds))]


def accuracy(scores: list[float]) -> float:
    return 100.0 * sum(scores) / len(scores)


def binomial_cdf(k: int, trials: int, p: float) -> float:
    return sum(math.comb(trials, i) * p ** i * (1 - p) ** (trials - i) for i in range(k + 1))


def upper_bound(k: int, trials: int) -> float:
    """One-sided Clopper-Pearson upper bound on a rate seen k times in `trials`: the p at which
    seeing k or fewer has probability 1 - CONFIDENCE (by bisection: the cdf falls as p grows)."""
    if k == trials:
        return 1.0
    low, high = k / trials, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if binomial_cdf(k, trials, mid) > 1 - CONFIDENCE else (low, mid)
    return high


def lower_bound(k: int, trials: int) -> float:
    """One-sided Clopper-Pearson lower bound: the misses' upper bound, mirrored."""
    return 1.0 - upper_bound(trials - k, trials)


def needed_n(sigma: float, drop: float, alpha: float, beta: float) -> int | None:
    """The smallest n whose theta (the gate's formula) is at most `drop`: theta = -(z(alpha) +
    z(beta)) sqrt(2 sigma^2 / n), solved for n. None when there is no drop to detect."""
    if drop <= 0:
        return None
    z = NormalDist().inv_cdf
    return math.ceil(2 * sigma ** 2 * ((z(alpha) + z(beta)) / drop) ** 2)


def measure(n: int, unchanged: list[float], planted: list[float], q: float) -> dict:
    """Every number of the table's row for n, from the runs' accuracies at n."""
    seeds = len(unchanged)
    ref = statistics.mean(unchanged)
    gate = AccuracyGate(ref, ref, n)
    false_red = sum(a < gate.threshold for a in unchanged)
    detected = sum(a < gate.threshold for a in planted)
    sd, planted_sd = statistics.stdev(unchanged), statistics.stdev(planted)
    planted_mean = statistics.mean(planted)
    # The two-sample variant: the reference is one other unchanged run (run s is compared with run
    # s + 1, planted run s with unchanged run s, whose seeds differ).
    two_sample_false_red = sum(a < AccuracyGate(unchanged[(s + 1) % seeds], a, n).threshold
                               for s, a in enumerate(unchanged))
    two_sample_detected = sum(a < AccuracyGate(r, a, n).threshold for a, r in zip(planted, unchanged))
    cdf = NormalDist().cdf
    row = {
        "n": n, "theta": gate.theta, "q": q, "ref": ref, "threshold": gate.threshold,
        "alpha": gate.alpha, "beta": gate.beta, "sigma": gate.sigma, "seeds": seeds,
        "unchanged_sd": sd, "implied_sigma": sd * math.sqrt(n),
        "false_red": false_red / seeds, "false_red_count": false_red,
        "false_red_upper": upper_bound(false_red, seeds),
        "planted_mean": planted_mean, "planted_sd": planted_sd, "planted_implied_sigma": planted_sd * math.sqrt(n),
        "drop": ref - planted_mean, "expected_drop": q * ref,
        "detection": detected / seeds, "detected_count": detected, "detection_lower": lower_bound(detected, seeds),
        # What a normal model of the runs, with the measured standard deviations, predicts.
        "false_red_normal": cdf((gate.threshold - ref) / sd) if sd else 0.0,
        "detection_normal": cdf((gate.threshold - planted_mean) / planted_sd) if planted_sd else
        float(planted_mean < gate.threshold),
        "two_sample_false_red": two_sample_false_red / seeds, "two_sample_detection": two_sample_detected / seeds,
        "unchanged_runs": unchanged, "planted_runs": planted,
    }
    row["met"] = row["false_red"] <= gate.alpha and row["detection"] >= 1 - gate.beta
    row["confirmed"] = row["false_red_upper"] <= gate.alpha and row["detection_lower"] >= 1 - gate.beta
    if not row["met"]:
        sigma = max(gate.sigma, row["implied_sigma"], row["planted_implied_sigma"])
        row["recalibrated"] = {"sigma": sigma, "n": needed_n(sigma, row["drop"], gate.alpha, gate.beta)}
    return row


def table(rows: list[dict]) -> str:
    lines = ["| n | theta | Q | ref (unchanged mean) | threshold | unchanged sd (implied sigma) | "
             "false red [95% upper] | planted mean (sd) | drop | detection [95% lower] | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['theta']:.2f} | {r['q']:.4f} | {r['ref']:.2f} | {r['threshold']:.2f} | "
            f"{r['unchanged_sd']:.2f} ({r['implied_sigma']:.1f}) | "
            f"{r['false_red_count']}/{r['seeds']} = {r['false_red']:.0%} [{r['false_red_upper']:.0%}] | "
            f"{r['planted_mean']:.2f} ({r['planted_sd']:.2f}) | {r['drop']:.2f} | "
            f"{r['detected_count']}/{r['seeds']} = {r['detection']:.0%} [{r['detection_lower']:.0%}] | "
            f"{'met' if r['met'] else 'NOT met'} |")
    return "\n".join(lines)


def verdict(r: dict) -> str:
    alpha, power = r["alpha"], 1 - r["beta"]
    line = (f"n={r['n']}: goal {'met' if r['met'] else 'NOT met'}: false red {r['false_red']:.0%} "
            f"{'<=' if r['false_red'] <= alpha else '>'} {alpha:.0%}, detection {r['detection']:.0%} "
            f"{'>=' if r['detection'] >= power else '<'} {power:.0%} (normal model: {r['false_red_normal']:.1%}, "
            f"{r['detection_normal']:.1%}; two-sample: {r['two_sample_false_red']:.0%}, "
            f"{r['two_sample_detection']:.0%}); ")
    line += ("the 95% bounds confirm it" if r["confirmed"] else
             f"not confirmed at 95% with {r['seeds']} seeds (bounds {r['false_red_upper']:.0%}, "
             f"{r['detection_lower']:.0%})")
    if "recalibrated" in r:
        fix = r["recalibrated"]
        line += (f"; to meet it: sigma {fix['sigma']:.1f} (the assumed or the data's, whichever is larger) "
                 f"and n >= {fix['n']} (theta at that sigma = the measured drop {r['drop']:.2f})"
                 if fix["n"] else "; the planted runs did not drop: check the fault")
    return line


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    wall = time.perf_counter()
    runs = Runs(args.n[-1], args.temperature)
    seeds = args.seeds
    unchanged = runs.correct(f"unchanged n={args.n[-1]}", "", list(range(seeds)), args.n[-1])
    rows = []
    for i, n in enumerate(args.n):
        at_n = [accuracy(scores[:n]) for scores in unchanged]
        ref = statistics.mean(at_n)
        theta = AccuracyGate(ref, ref, n).theta
        q = round(min(1.0, theta / ref), 4) if ref else 1.0                # the expected drop: theta points
        run_seeds = list(range((i + 1) * seeds, (i + 2) * seeds))           # other seeds than every other run
        planted = [accuracy(s) for s in runs.correct(f"planted n={n} early_eos:{q}", f"early_eos:{q}", run_seeds, n)]
        rows.append(measure(n, at_n, planted, q))
    wall = time.perf_counter() - wall

    print(f"model {runs.model_dir.name}, task {runs.task.name} ({runs.metric}), temperature {args.temperature}, "
          f"{seeds} seeds, {args.threads} thread(s), {wall:.0f} s")
    print(table(rows))
    for r in rows:
        print(verdict(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": runs.model_dir.name, "task": runs.task.name, "metric": runs.metric,
                       "temperature": args.temperature, "seeds": seeds, "threads": args.threads,
                       "seconds": wall, "configurations": runs.timings, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
