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
    result = EvalResult(model="m", dataset="d", engine={"mtp_nextn": 2}, n=100, correct=75, accuracy=75.0, generated_tokens=1,
                        seconds=1.0, tokens_per_s=1.0, spec={"acceptance_rate": 0.60})
    gates, report = gate_result(result, ref)
    assert gates[0].sigma == 40 and gates[0].passed                 # 79 - 1.645 * sqrt(2*1600/100) = 69.7
    assert not gates[1].passed and "acceptance FAIL" in report       # 0.60 < 0.9 * 0.7
