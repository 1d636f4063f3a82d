"""Tests that `trtx run` drives in the harness's own tests: every outcome a list can produce."""
import os
import time


def test_ok(record_property):
    record_property("accuracy", 91.25)
    record_property("n", 400)
    record_property("pid", os.getpid())


def test_broken(record_property):
    record_property("pid", os.getpid())
    assert 2 + 2 == 5, "the engine returned the wrong answer"


def test_hangs():
    time.sleep(600)


def test_waived_skip():
    raise AssertionError("never runs: waived SKIP")


def test_waived_xfail():
    assert False, "known bug"


def test_isolated(record_property):
    record_property("pid", os.getpid())


def test_slow_a():
    time.sleep(0.2)
