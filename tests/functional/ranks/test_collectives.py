"""The collective desync detector on a real 3-rank job: a gather behind a per-rank condition is
caught on every rank, naming each rank's collective and call site; without the detector the same
job does not end cleanly."""
import sys

import pytest

from tests.helpers.ranks import JOBS
from trtx.cli.launch.launcher import Launch, processes_of

JOB = JOBS / "desync_job.py"
pytestmark = [pytest.mark.timeout(180), pytest.mark.multirank]


def run(tmp_path, mode, timeout_s):
    logs = (tmp_path / "logs").resolve()
    result = Launch(3, [sys.executable, str(JOB), mode], timeout_s, logs).run()
    assert not processes_of(logs)
    return result


def test_a_collective_behind_a_rank_condition_is_named_by_the_detector(tmp_path):
    result = run(tmp_path, "check", 120)
    assert result.reason == "failed"
    lines = JOB.read_text().splitlines()
    gather = next(i for i, ln in enumerate(lines, 1) if "comm.all_gather_object(" in ln)
    second = next(i for i, ln in enumerate(lines, 1) if i > gather and "comm.all_reduce(t)" in ln)
    text = " ".join(result.ranks[result.first_failure].traceback().split())
    assert "CollectiveDesync" in text
    assert f"rank 0: collective #2 all_gather_object object at desync_job.py:{gather} in <module>" in text
    for r in (1, 2):
        assert f"rank {r}: collective #2 all_reduce (1,) torch.float32 at desync_job.py:{second} in <module>" in text


def test_without_the_detector_the_same_bug_does_not_end_cleanly(tmp_path):
    result = run(tmp_path, "nocheck", 20)
    assert result.reason in ("timeout", "failed")
    assert all("CollectiveDesync" not in r.log_text() for r in result.ranks)
