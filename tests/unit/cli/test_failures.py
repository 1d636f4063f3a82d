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


def job(tmp_path: Path, reason: str, last_line: str = "") -> JobError:
    log = tmp_path / "rank0.log"
    log.write_text(f"Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n{last_line}\n")
    rank = RankState(0, pid=1, exit_code=1, log=log)
    return JobError(LaunchResult(1, reason, [rank], 1.0, tmp_path, 0 if reason == "failed" else None))


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
