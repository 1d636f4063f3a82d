"""`trtx run --retries`: only failures of the infrastructure run again (a timeout too with
--retry-timeouts), never a gate or an assertion; a test that passes on a retry is flaky, in the
report, results.jsonl and the JUnit as Maven Surefire writes it (read back by junitparser, as
GitLab and Jenkins read it); every attempt's logs are kept. Real pytest children, and a real
one-rank mpirun job whose rank dies of a reset connection."""
import json
import shutil

import pytest
from junitparser.xunit2 import JUnitXml

from .test_run import FIXTURE, _args
from .test_run_ci import trtx

RETRY = "suite/test_retry.py::"
RESET, GATE, REFUSED, TIMEOUT, SKIPS = (RETRY + name for name in (
    "test_connection_reset_on_a_rank_once", "test_gate_fails_every_time", "test_connection_refused_every_time",
    "test_times_out_once", "test_skips_when_run_again"))


def retry_run(tmp_path, *options):
    tree, attempts = tmp_path / "t", tmp_path / "attempts"
    shutil.copytree(FIXTURE, tree)
    attempts.mkdir()
    results, summary = tmp_path / "results", tmp_path / "step-summary.md"
    summary.write_text("an earlier step's summary\n")
    res = trtx("run", "fx_retry", *_args(tree, results, *options),
               env={"FX_ATTEMPTS": str(attempts), "GITHUB_STEP_SUMMARY": str(summary)})
    counts = {p.name: int(p.read_text()) for p in attempts.iterdir()}
    report = json.loads(trtx("report", results, "--format", "json").stdout)
    return res, results, counts, {t["nodeid"]: t for t in report["tests"]}, report["summary"]


@pytest.fixture(scope="module")
def retried(tmp_path_factory):
    return retry_run(tmp_path_factory.mktemp("retries"), "--retries", "2", "--retry-timeouts")


def test_only_infrastructure_failures_and_asked_for_timeouts_run_again(retried):
    res, _, counts, tests, summary = retried
    assert res.returncode == 1, res.stdout + res.stderr           # the gate, the refused connection, the skip
    assert counts == {"reset": 2, "gate": 1, "refused": 3, "timeout": 2, "skips": 2}
    assert tests[GATE]["outcome"] == "failed" and tests[GATE]["failure"] == "assertion" and not tests[GATE]["attempts"]
    assert tests[REFUSED]["outcome"] == "failed" and [a["failure"] for a in tests[REFUSED]["attempts"]] == ["infra"] * 2
    for nodeid, kind in ((RESET, "infra"), (TIMEOUT, "timeout")):
        assert tests[nodeid]["outcome"] == "passed", tests[nodeid]
        (first,) = tests[nodeid]["attempts"]
        assert first["outcome"] in ("failed", "error") and first["failure"] == kind
    assert "ConnectionResetError" in tests[RESET]["attempts"][0]["message"]
    assert [nodeid for nodeid, t in tests.items() if t["flaky"]] == [RESET, TIMEOUT]
    assert summary["flaky"] == 2 and summary["failed"] == 2 and summary["passed"] == 2 and summary["error"] == 1
    # A retry that skipped gave no verdict: the test stays red, not flaky.
    assert tests[SKIPS]["outcome"] == "error" and not tests[SKIPS]["flaky"]
    assert tests[SKIPS]["message"].startswith("attempt 2 was skipped after a failed attempt, which is no verdict")


def test_the_log_names_each_attempt_and_the_report_the_flaky_tests(retried):
    res, *_ = retried
    log = res.stdout.split("trtx results:\n")[0].splitlines()
    assert f"START    {REFUSED} (attempt 3 of 3)" in log
    # A failure that runs again is no verdict: RETRY, not FAILED, so that grep '^FAILED' finds verdicts.
    assert [line.split()[0] for line in log if f" {REFUSED} " in line and not line.startswith("START")] == \
        ["RETRY", "RETRY", "FAILED"]
    retry = next(line for line in log if line.startswith(f"RETRY    {RESET} "))
    assert "infra failure, runs again once the list has run: " in retry and "ConnectionResetError" in retry
    summary = res.stdout.split("trtx results:\n")[1].splitlines()
    flaky = next(line for line in summary if line.startswith("PASSED   " + RESET))
    assert "flaky: attempt 1 failed (infra): trtx.cli.eval.engines.RankJobError" in flaky
    assert any(line.startswith("FAILED   " + REFUSED) and line.endswith("failed 3 attempts") for line in summary)
    assert summary[-1] == "failed: 2  error: 1  passed: 2  total: 5 (2 flaky)"


def test_the_github_step_summary_gets_the_markdown_report_appended(retried):
    _, results, *_ = retried
    text = (results.parent / "step-summary.md").read_text()
    assert text.startswith("an earlier step's summary\n## trtx run fx_retry: ❌ failed\n")
    assert f"| ✅ passed 🔁 flaky | `{RESET}` |" in text and "(2 flaky)" in text


def test_junit_has_surefire_flaky_and_rerun_elements_as_junitparser_reads_them(retried):
    _, results, *_ = retried
    suite = next(iter(JUnitXml.fromfile(str(results / "junit.xml"))))
    assert (suite.tests, suite.failures, suite.errors) == (5, 3, 0)     # SKIPS: its first attempt's failure
    cases = {c.name: c for c in suite}
    reset, refused, gate = (cases[n.split("::")[1]] for n in (RESET, REFUSED, GATE))
    assert reset.is_passed and reset.is_flaky and not reset.is_rerun
    assert "RankJobError" in reset.flaky_failures()[0].message and reset.flaky_failures()[0].type == "infra"
    assert not refused.is_passed and refused.is_rerun and len(refused.rerun_failures()) == 2
    assert refused.result[0].message.startswith("ConnectionRefusedError")     # the first attempt's failure
    assert not gate.is_passed and not gate.is_rerun and gate.result[0].type == "assertion"
    assert reset._elem.get("file") == "suite/test_retry.py"                  # GitLab links the file


def test_every_attempt_keeps_its_log_and_its_tests_temporary_folders(retried):
    _, results, *_ = retried
    logs = results / "logs"
    first = logs / "tmp-0" / "test_connection_reset_on_a_ran0" / "logs"
    assert "ConnectionResetError" in "".join(p.read_text() for p in first.rglob("*.log"))   # rank 0's log
    retries = sorted(p.name for p in logs.glob("pytest-retry*.log"))
    assert retries == ["pytest-retry2-0.log", "pytest-retry2-1.log", "pytest-retry2-2.log", "pytest-retry2-3.log",
                       "pytest-retry3-0.log"]
    events = [json.loads(line) for line in (results / "results.jsonl").read_text().splitlines()]
    assert sorted(e["attempt"] for e in events if e["event"] == "finish" and e["nodeid"] == REFUSED) == [1, 2, 3]
    assert [e["attempt"] for e in events if e["event"] == "finish" and e["flaky"]] == [2, 2]


def test_without_retry_timeouts_a_timeout_is_the_verdict(tmp_path):
    res, _, counts, tests, _ = retry_run(tmp_path, "--retries", "1", "-k", "times_out or gate")
    assert res.returncode == 1 and counts == {"timeout": 1, "gate": 1}
    assert tests[TIMEOUT]["outcome"] == "failed" and tests[TIMEOUT]["failure"] == "timeout"


def test_retry_timeouts_needs_retries(tmp_path):
    res = trtx("run", "fx_retry", *_args(FIXTURE, tmp_path / "r", "--retry-timeouts"))
    assert res.returncode == 2 and "--retry-timeouts needs --retries N" in res.stderr
