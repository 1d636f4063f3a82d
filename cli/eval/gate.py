"""The gates an integration test applies to an eval result, and the references they compare with.

Metrics (accuracy, and every metric of a task: exact_match,<filter>, acc, acc_norm; 0-100): a
one-sided hypothesis test each (DESIGN.md, "Statistics"). With the reference value ref (measured
on the reference configuration), the per-sample standard deviation sigma (50: a Bernoulli at
p = 0.5 on the 0-100 scale) and n samples run,
    scale     = sqrt(2 sigma^2 / n)
    threshold = ref + z(alpha) scale        (z(alpha) < 0: the run may fall this far below ref)
    theta     = -(z(alpha) + z(beta)) scale (the smallest drop the test detects with power 1-beta)
The threshold holds for the n it was computed for only, so it is computed from the n actually
run, and the report shows ref, threshold, measured, n, alpha, beta, sigma and theta either way.

Acceptance (MTP): the run's acceptance rate must reach a floor (0.50 by default) and, when the
reference has one for this configuration, a relative floor (by default 90%) of it.

References (`tests/integration/references/<task>.yaml`), one list per model; an entry is a
configuration plus the metrics measured on it (`accuracy` names the task's primary metric):
    tiny-arith:
      - exact_match,last-answer: 84.5
      - spec_dec_algo: MTP
        mtp_nextn: 2
        exact_match,last-answer: 84.5
        acceptance_rate: 0.761
The first entry whose configuration keys (every key but the metrics and gate parameters) equal
the run's spec exactly wins; no matching entry is an error, never a silent pass (a misspelt
metric is a configuration key no run has).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import yaml

GATE_KEYS = {"accuracy", "acceptance_rate", "sigma", "alpha", "beta"}
# Metrics that are proportions of documents (0-100 here; an lm-eval name may add ",<filter>"): the
# one-sided test above, higher is better, applies to these only (not to a perplexity).
PROPORTIONS = ("acc", "acc_norm", "exact_match", "mc1", "mc2", "f1", "em")


class ReferenceError(ValueError):
    pass


def load_reference(path: Path, model: str, spec: dict, metrics=()) -> dict:
    """The reference entry for `model` whose configuration keys equal `spec`; `metrics`: the names
    of the task's metrics, which are no configuration keys."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ReferenceError(f"{path}: no references file for this task") from None
    except yaml.YAMLError as e:
        raise ReferenceError(f"{path}: not valid YAML ({e})") from None
    entries = data.get(model)
    if not isinstance(entries, list):
        raise ReferenceError(f"{path}: no reference list for model {model!r} (has: {', '.join(data) or 'none'})")
    not_config = GATE_KEYS | set(metrics)
    configs = [{k: v for k, v in entry.items() if k not in not_config} for entry in entries]
    for entry, config in zip(entries, configs):
        if config == spec:
            return entry
    raise ReferenceError(f"{path}: no {model!r} reference for configuration {spec or '{}'} (entries: {configs})")


@dataclass
class AccuracyGate:
    ref: float
    measured: float
    n: int
    alpha: float = 0.05
    beta: float = 0.2
    sigma: float = 50.0
    metric: str = "accuracy"        # what is gated: accuracy (a task's primary metric) or a metric's name

    @property
    def scale(self) -> float:
        return math.sqrt(2 * self.sigma ** 2 / self.n)

    @property
    def threshold(self) -> float:
        return self.ref + NormalDist().inv_cdf(self.alpha) * self.scale

    @property
    def theta(self) -> float:
        return -(NormalDist().inv_cdf(self.alpha) + NormalDist().inv_cdf(self.beta)) * self.scale

    @property
    def passed(self) -> bool:
        return self.measured >= self.threshold

    def report(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (f"{self.metric} {verdict}: measured {self.measured:.2f} vs threshold {self.threshold:.2f} "
                f"(ref {self.ref:.2f}, n {self.n}, alpha {self.alpha}, beta {self.beta}, sigma {self.sigma}, "
                f"theta {self.theta:.2f})")

    def as_metrics(self) -> dict:
        m = self.metric
        return {m: self.measured, f"{m}_threshold": round(self.threshold, 3), f"{m}_ref": self.ref, "n": self.n,
                "alpha": self.alpha, "beta": self.beta, "sigma": self.sigma, "theta": round(self.theta, 3)}


@dataclass
class AcceptanceGate:
    measured: float
    floor: float = 0.50
    ref: float | None = None
    relative_floor: float = 0.9

    @property
    def threshold(self) -> float:
        return max(self.floor, self.relative_floor * self.ref) if self.ref is not None else self.floor

    @property
    def passed(self) -> bool:
        return self.measured >= self.threshold

    def report(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        ref = f", ref {self.ref:.3f} x {self.relative_floor}" if self.ref is not None else ""
        return (f"acceptance {verdict}: measured {self.measured:.3f} vs threshold {self.threshold:.3f} "
                f"(floor {self.floor}{ref})")

    def as_metrics(self) -> dict:
        return {"acceptance_rate": self.measured, "acceptance_threshold": round(self.threshold, 3)}


def gate_result(result, reference: dict, acceptance_floor: float = 0.50) -> tuple[list, str]:
    """The gates for an EvalResult against its reference entry: one per metric of the task the
    entry gives (`accuracy`: the result's primary metric), and MTP acceptance with speculation.
    (A key that names no metric of the task is a configuration key, which load_reference matched
    against the run's.) Returns (gates, full report)."""
    params = {k: reference[k] for k in ("alpha", "beta", "sigma") if k in reference}
    gates: list = []
    for key, ref in reference.items():
        if key == "accuracy":
            gates.append(AccuracyGate(ref, result.accuracy, result.n, **params))
        elif key in result.metrics:
            if key.split(",")[0] not in PROPORTIONS:
                raise ReferenceError(f"{key!r} is no proportion of documents ({', '.join(PROPORTIONS)}): the "
                                     f"accuracy gate (higher is better, sigma 50) cannot gate it")
            gates.append(AccuracyGate(ref, result.metrics[key], result.n, **params, metric=key))
    if not gates:
        raise ReferenceError(f"the reference gives none of task {result.task!r}'s metrics ({', '.join(result.metrics)})")
    if result.spec:
        gates.append(AcceptanceGate(result.spec["acceptance_rate"], acceptance_floor,
                                    reference.get("acceptance_rate")))
    return gates, "\n".join(g.report() for g in gates)
