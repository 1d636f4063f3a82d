"""Tests for `trtx run --retries` (tests/functional/cli/test_retries.py): each counts its attempts
in the folder $FX_ATTEMPTS names, and fails in its own way on the first or on every attempt."""
import os
import sys
import time
from pathlib import Path

import pytest

from trtx.cli.eval.engines import RankJobError
from trtx.cli.launch.launcher import Launch


def attempt(name: str) -> int:
    """This test's attempt number in this run: 1, 2, ..."""
    counter = Path(os.environ["FX_ATTEMPTS"]) / name
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    return n


def test_connection_reset_on_a_rank_once(tmp_path):
    """The first attempt's job (one real rank under mpirun) dies of a reset connection: infra."""
    crash = "raise ConnectionResetError(104, 'Connection reset by peer')"
    code = crash if attempt("reset") == 1 else "pass"
    result = Launch(1, [sys.executable, "-c", code], timeout_s=60, log_dir=tmp_path / "logs").run()
    if result.reason != "ok":
        raise RankJobError(result)


def test_gate_fails_every_time(record_property):
    attempt("gate")
    record_property("accuracy", 80.0)
    record_property("accuracy_threshold", 84.3)
    assert 80.0 >= 84.3, "accuracy below its threshold"


def test_connection_refused_every_time():
    attempt("refused")
    raise ConnectionRefusedError(111, "Connection refused")


@pytest.mark.timeout(1)
def test_times_out_once():
    if attempt("timeout") == 1:
        time.sleep(5)


def test_skips_when_run_again():
    """A retry that skips (say, its GPU still held by the first attempt's ranks) is no verdict."""
    if attempt("skips") == 1:
        raise ConnectionResetError(104, "Connection reset by peer")
    pytest.skip("no free GPU")
