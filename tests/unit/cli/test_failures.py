"""The kinds of failure `trtx run --retries` goes by (cli/run/failures.py): an infrastructure
failure is told apart from the verdicts a retry must never hide."""
from pathlib import Path

import pytest

from trtx.cli.launch.launcher import LaunchResult, RankState
from trtx.cli.run.failures import classify, classify_log


class JobError(Exception):
    """Like cli/eval/engines.RankJobError: a failed job's error carrying the launcher's result."""

    def __init__(self, launch):
        super().__init__("job failed")
        self.launch = launch


def job(tmp_path: Path, reason: str, *last_lines: str) -> JobError:
    """A job whose rank i raised an exception with last line last_lines[i] ("" for a rank killed
    at teardown, with no traceback); rank 0 failed first."""
    ranks = []
    for i, line in enumerate(last_lines or ("",)):
        log = tmp_path / f"rank{i}.log"
        log.write_text(f"Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n{line}\n"
                       if line else "killed\n")
        ranks.append(RankState(i, pid=1, exit_code=1, log=log))
    return JobError(LaunchResult(1, reason, ranks, 1.0, tmp_path, 0 if reason == "failed" else None))


@pytest.mark.parametrize("reason,last_line,kind", [
    ("launcher-error", "", "infra"),
    ("timeout", "", "timeout"),
    ("failed", "torch.distributed.DistNetworkError: Connection reset by peer", "infra"),
    ("failed", "ConnectionRefusedError: [Errno 111] Connection refused", "infra"),
    ("failed", "RuntimeError: collective desync: rank 1 gathered 2 tensors", "error"),
    ("failed", "AssertionError: tokens differ", "error"),       # an assert on a rank is the engine's verdict
])
def test_a_failed_job_is_classified_by_why_it_ended(tmp_path, reason, last_line, kind):
    assert classify(job(tmp_path, reason, last_line)) == kind


def test_a_rank_that_asserted_is_no_infra_failure_though_its_peers_lost_their_connections(tmp_path):
    # Which rank failed first is decided by exit-file times: the verdict must not depend on it.
    peers = "RuntimeError: [gloo] Connection closed by peer [127.0.0.1]:5000"
    assert classify(job(tmp_path, "failed", peers, "AssertionError: tokens differ", "")) == "error"
    assert classify(job(tmp_path, "failed", peers, "ConnectionResetError: reset", "")) == "infra"


def test_a_connection_error_while_cleaning_up_after_a_failed_gate_is_the_gate(tmp_path):
    try:
        try:
            assert 80.0 >= 84.3, "accuracy FAIL"
        finally:
            raise BrokenPipeError(32, "Broken pipe")     # e.g. an engine shut down in a finally
    except BrokenPipeError as e:
        assert classify(e) == "assertion"
    try:
        try:
            raise Exception("Timeout (>600.0s) from pytest-timeout.")
        finally:
            raise ConnectionResetError(104, "reset")
    except ConnectionResetError as e:
        assert classify(e) == "timeout"


def test_a_connection_error_caught_on_the_way_to_another_error_is_not_infra(tmp_path):
    text = "ConnectionResetError: reset\n\nDuring handling of the above exception, another exception occurred:\n\n" \
           "Traceback (most recent call last):\nValueError: bad shape"
    assert classify(job(tmp_path, "failed", text)) == "error"


def test_exceptions_in_the_test_process():
    assert classify(ConnectionRefusedError(111, "refused")) == "infra"
    assert classify(AssertionError("accuracy FAIL: measured 80 vs threshold 84")) == "assertion"
    assert classify(ValueError("boom")) == "error"
    assert classify(Exception("Timeout (>600.0s) from pytest-timeout.")) == "timeout"
    try:
        try:
            raise ConnectionResetError(104, "reset")
        except ConnectionResetError as e:
            raise RuntimeError("engine could not start") from e
    except RuntimeError as e:
        assert classify(e) == "infra"                 # the cause is what happened


def test_a_pytest_that_died_of_its_thread_timeout_is_a_timeout():
    assert classify_log("x\n+++++++++++++++++++ Timeout +++++++++++++++++++\nstack") == "timeout"
    assert classify_log("Segmentation fault") == "error"
