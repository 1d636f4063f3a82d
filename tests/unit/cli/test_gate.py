"""The accuracy and acceptance gates against hand-computed values, and reference matching."""
import pytest

from trtx.cli.eval.gate import AcceptanceGate, AccuracyGate, ReferenceError, gate_result, load_reference
from trtx.cli.eval.evaluate import EvalResult


def test_accuracy_threshold_and_theta_follow_the_one_sided_test():
    g = AccuracyGate(ref=84.5, measured=80.0, n=200)          # scale = sqrt(2 * 50^2 / 200) = 5
    assert g.scale == pytest.approx(5.0)
    assert g.threshold == pytest.approx(84.5 - 1.644854 * 5, abs=1e-4)
    assert g.theta == pytest.approx((1.644854 + 0.841621) * 5, abs=1e-4)
    assert g.passed
    assert not AccuracyGate(ref=84.5, measured=76.0, n=200).passed
    # The threshold belongs to its n: four times the samples halve the allowed drop.
    assert 84.5 - AccuracyGate(84.5, 0, 800).threshold == pytest.approx((84.5 - g.threshold) / 2)
    report = AccuracyGate(84.5, 76.0, 200).report()
    for part in ("FAIL", "measured 76.00", "threshold 76.28", "ref 84.50", "n 200", "alpha 0.05", "beta 0.2",
                 "sigma 50.0", "theta 12.43"):
        assert part in report


def test_acceptance_gate_uses_the_floor_and_the_relative_reference():
    assert AcceptanceGate(0.55).threshold == 0.50 and AcceptanceGate(0.55).passed
    g = AcceptanceGate(0.70, ref=0.80)
    assert g.threshold == pytest.approx(0.72) and not g.passed
    assert AcceptanceGate(0.55, ref=0.40).threshold == 0.50       # the floor holds under a low reference


REFS = """\
m:
  - accuracy: 80.0
  - spec_dec_algo: MTP
    mtp_nextn: 2
    accuracy: 79.0
    acceptance_rate: 0.7
    sigma: 40
"""


def test_the_entry_whose_configuration_equals_the_run_wins(tmp_path):
    path = tmp_path / "refs.yaml"
    path.write_text(REFS)
    assert load_reference(path, "m", {})["accuracy"] == 80.0
    assert load_reference(path, "m", {"spec_dec_algo": "MTP", "mtp_nextn": 2})["accuracy"] == 79.0
    with pytest.raises(ReferenceError, match="no 'm' reference for configuration"):
        load_reference(path, "m", {"spec_dec_algo": "MTP", "mtp_nextn": 3})
    with pytest.raises(ReferenceError, match="no reference list for model 'x'"):
        load_reference(path, "x", {})
    with pytest.raises(ReferenceError, match="no references file"):
        load_reference(tmp_path / "none.yaml", "m", {})


def test_gate_result_applies_both_gates_with_the_entry_statistics(tmp_path):
    path = tmp_path / "refs.yaml"
    path.write_text(REFS)
    ref = load_reference(path, "m", {"spec_dec_algo": "MTP", "mtp_nextn": 2})
    result = result_with({"exact_match,strict": 75.0}, spec={"acceptance_rate": 0.60})
    gates, report = gate_result(result, ref)
    assert gates[0].sigma == 40 and gates[0].passed                 # 79 - 1.645 * sqrt(2*1600/100) = 69.7
    assert not gates[1].passed and "acceptance FAIL" in report       # 0.60 < 0.9 * 0.7


def result_with(metrics: dict, spec=None) -> EvalResult:
    primary = next(iter(metrics.values()))
    return EvalResult(model="m", task="t", dataset="d", engine={}, n=100, metrics=metrics, accuracy=primary,
                      correct=round(primary), generated_tokens=1, seconds=1.0, tokens_per_s=1.0, spec=spec)


def test_every_metric_of_the_task_the_reference_gives_is_gated(tmp_path):
    """A multiple-choice reference gates acc and acc_norm each (exact_match, not in the entry, is
    not gated); the metric names are no configuration keys; every gate is recorded under its name."""
    path = tmp_path / "refs.yaml"
    path.write_text("m:\n  - acc: 90.0\n    acc_norm: 60.0\n  - exact_match,strict: 50\n    mtp_nextn: 2\n")
    metrics = ["acc", "acc_norm", "exact_match"]
    ref = load_reference(path, "m", {}, metrics)
    gates, report = gate_result(result_with({"acc": 80.0, "acc_norm": 50.0, "exact_match": 1.0}), ref)
    assert [(g.metric, g.passed) for g in gates] == [("acc", True), ("acc_norm", True)]
    assert "acc PASS: measured 80.00 vs threshold 78.37" in report and "acc_norm PASS" in report
    assert gates[1].as_metrics()["acc_norm_threshold"] == pytest.approx(48.37, abs=0.01)
    gates, _ = gate_result(result_with({"acc": 60.0, "acc_norm": 50.0, "exact_match": 1.0}), ref)
    assert [g.passed for g in gates] == [False, True]
    # Without the task's metric names, "acc" would be a configuration key no run has.
    with pytest.raises(ReferenceError, match="no 'm' reference for configuration"):
        load_reference(path, "m", {})
    # A misspelt metric is a configuration key: no entry matches, never a silent pass.
    path.write_text("m:\n  - acc_nrom: 60.0\n")
    with pytest.raises(ReferenceError, match="entries: \\[\\{'acc_nrom': 60.0\\}\\]"):
        load_reference(path, "m", {}, metrics)
    # A metric that is no proportion (an lm-eval perplexity) cannot take the accuracy gate.
    path.write_text("m:\n  - word_perplexity,none: 12.0\n")
    with pytest.raises(ReferenceError, match="'word_perplexity,none' is no proportion of documents"):
        gate_result(result_with({"word_perplexity,none": 11.0}),
                    load_reference(path, "m", {}, ["word_perplexity,none"]))
    # An entry with no metric of the task gates nothing: an error.
    path.write_text("m:\n  - sigma: 40\n")
    with pytest.raises(ReferenceError, match="gives none of task 't'"):
        gate_result(result_with({"acc": 60.0}), load_reference(path, "m", {}, metrics))
