"""Tests for `trtx run --run-waived` (tests/functional/cli/test_run_waived.py): both waived SKIP in
waives-run.txt; one is still broken, the other has been fixed since it was waived."""


def test_still_broken():
    raise AssertionError("the bug is still there")


def test_fixed_since():
    pass
