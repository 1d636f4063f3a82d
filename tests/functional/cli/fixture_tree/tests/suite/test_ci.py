"""Tests for the CI log of `trtx run`: metrics recorded as cli/eval/gate.py's as_metrics names them."""
import time


def test_gated_metrics_are_logged_against_their_thresholds_on_the_same_line_as_the_id(record_property):
    for name, value in {"accuracy": 91.25, "accuracy_threshold": 84.3, "accuracy_ref": 88.0, "n": 200,
                        "acceptance_rate": 0.76, "acceptance_threshold": 0.5}.items():
        record_property(name, value)


def test_below_threshold(record_property):
    record_property("accuracy", 80.0)
    record_property("accuracy_threshold", 84.3)
    assert 80.0 >= 84.3, "accuracy below its threshold"


def test_slow():
    time.sleep(1.5)
