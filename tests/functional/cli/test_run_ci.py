"""`trtx run` and `trtx report` as CI uses them, over the fixture tree with real pytest children:
the log without a terminal, SIGTERM and SIGINT, report's exit codes, shards merged, JUnit on
standard output, bad results files, and report's default folder."""
import json
import os
import re
import shutil
import signal
import subprocess
import xml.etree.ElementTree as ET

import psutil
import pytest

from .test_run import FIXTURE, TRTX, _args, wait_for_start

GATED = "suite/test_ci.py::test_gated_metrics_are_logged_against_their_thresholds_on_the_same_line_as_the_id"
BELOW = "suite/test_ci.py::test_below_threshold"
SLOW = "suite/test_ci.py::test_slow"
# A log line of one test: what happened, the whole test id, then anything, on one line.
TEST_LINE = re.compile(r"^(START|RUNNING|PASSED|FAILED|ERROR|SKIPPED|XFAILED|XPASSED) +(suite/\S+)(?: (.*))?$")


def trtx(*args, cwd=None, env=None):
    return subprocess.run([TRTX, *map(str, args)], capture_output=True, text=True, timeout=180, cwd=cwd,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """`trtx run fx_ci` in two shards as CI runs it: stdout a pipe, 80 columns, a 0.5 s heartbeat.
    Shard 1: the gated test and the slow one (both pass); shard 2: the test below its threshold."""
    tree = tmp_path_factory.mktemp("ci") / "t"
    shutil.copytree(FIXTURE, tree)
    runs = {}
    for k in (1, 2):
        results = tree.parent / f"shard{k}"
        res = trtx("run", "fx_ci", *_args(tree, results), "--shard", f"{k}/2", "--durations", tree / "none.json",
                   env={"COLUMNS": "80", "TRTX_HEARTBEAT_S": "0.5"})
        runs[k] = results, res
    return runs


def log_and_summary(stdout: str) -> tuple[list[str], list[str]]:
    lines = stdout.splitlines()
    end = lines.index("trtx results:")
    return lines[1:end], lines[end + 1:]


def test_without_a_tty_each_test_logs_a_start_and_an_end_line_never_wrapped(shards):
    _, res = shards[1]
    assert res.returncode == 0, res.stdout + res.stderr
    log, summary = log_and_summary(res.stdout)
    assert res.stdout.startswith("trtx run fx_ci: 2 list entries, results in ")
    parsed = [TEST_LINE.match(line) for line in log]
    assert all(parsed), log                                 # no line is the folded tail of another
    kinds = [(m[1], m[2]) for m in parsed if m[1] != "RUNNING"]
    assert kinds == [("START", GATED), ("PASSED", GATED), ("START", SLOW), ("PASSED", SLOW)]
    gated = next(line for line in log if line.startswith("PASSED   " + GATED))
    assert len(gated) > 80 and gated.endswith("(0.0s): accuracy 91.25 >= 84.3; acceptance_rate 0.76 >= 0.5")
    # Heartbeats while test_slow (1.5 s) runs, between its start and end lines.
    beats = [i for i, m in enumerate(parsed) if m[1] == "RUNNING"]
    assert beats and all(parsed[i][2] == SLOW and re.fullmatch(r"\(still running, \ds\)", parsed[i][3]) for i in beats)
    assert log.index("START    " + SLOW) < beats[0] < beats[-1] < len(log) - 1
    # The summary: one line per test, the id whole, the gated metrics and the other metrics.
    assert [TEST_LINE.match(line)[2] for line in summary[:-1]] == [GATED, SLOW]
    assert summary[0].endswith("accuracy 91.25 >= 84.3; acceptance_rate 0.76 >= 0.5; accuracy_ref=88; n=200")
    assert summary[-1] == "passed: 2  total: 2"


def test_a_failed_gate_logs_its_error_and_the_metric_below_its_threshold(shards):
    _, res = shards[2]
    assert res.returncode == 1
    log, summary = log_and_summary(res.stdout)
    end = f"FAILED   {BELOW} (0.0s): AssertionError: accuracy below its threshold; accuracy 80 < 84.3"
    assert log == [f"START    {BELOW}", end]
    assert summary == [end, "failed: 1  total: 1"]


def test_report_exit_code_and_shards_merged(shards, tmp_path):
    (one, _), (two, _) = shards[1], shards[2]
    assert trtx("report", one).returncode == 0
    assert trtx("report", two).returncode == 1
    res = trtx("report", one, two, "--format", "json")
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert [t["nodeid"] for t in doc["tests"]] == [GATED, SLOW, BELOW] and doc["summary"]["failed"] == 1
    suite = ET.fromstring(trtx("report", one, two, "--format", "junit").stdout).find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")
    # A test in two folders (shard 2 rerun, green this time) keeps its worst outcome, and says so.
    rerun = tmp_path / "rerun"
    shutil.copytree(two, rerun)
    log = rerun / "results.jsonl"
    log.write_text(log.read_text().replace('"outcome": "failed"', '"outcome": "passed"'))
    assert trtx("report", rerun).returncode == 0
    res = trtx("report", one, two, rerun, "--format", "json")
    assert res.returncode == 1 and json.loads(res.stdout)["summary"]["total"] == 3
    assert f"{BELOW} is in several results folders: kept its worst outcome" in res.stderr
    # --baseline still works against merged shards.
    cmp = json.loads(trtx("report", one, two, "--baseline", rerun, "--format", "json").stdout)["baseline"]
    assert cmp["new_failures"] == [BELOW]


def test_report_streams_to_stdout_never_through_dev(shards, tmp_path):
    one, _ = shards[1]
    stdout_was_link = os.path.islink("/dev/stdout")
    res = trtx("report", one, "--format", "junit", cwd=tmp_path)      # stdout is a pipe
    assert res.returncode == 0 and ET.fromstring(res.stdout).find("testsuite").get("tests") == "2"
    assert trtx("report", one, "--format", "junit", "-o", "-", cwd=tmp_path).stdout == res.stdout
    md = trtx("report", one, "--format", "markdown", "-o", "-", cwd=tmp_path)
    assert md.returncode == 0 and md.stdout.startswith("## trtx: ✅ passed")
    assert not (tmp_path / "-").exists()
    out = tmp_path / "out.xml"
    res = trtx("report", one, "--format", "junit", "-o", out)
    assert res.stdout == "" and ET.parse(out).getroot().find("testsuite").get("tests") == "2"
    assert os.path.islink("/dev/stdout") == stdout_was_link


def _finish_line(results_dir) -> str:
    return next(line for line in (results_dir / "results.jsonl").read_text().splitlines() if '"finish"' in line)


@pytest.mark.parametrize("bad, error", [
    ("torn", r"results\.jsonl:3: not a JSON line \(.*\): a torn or edited results file"),
    ("no nodeid", r"results\.jsonl:3: finish event without nodeid"),
])
def test_a_bad_results_line_is_one_line_naming_file_and_line(shards, tmp_path, bad, error):
    one, _ = shards[1]
    lines = (one / "results.jsonl").read_text().splitlines(keepends=True)
    event = json.loads(lines[2])
    assert event["event"] == "finish"
    if bad == "torn":
        lines[2] = lines[2][:40] + "\n"
    else:
        del event["nodeid"]
        lines[2] = json.dumps(event) + "\n"
    shutil.copytree(one, tmp_path / "r")
    (tmp_path / "r" / "results.jsonl").write_text("".join(lines))
    res = trtx("report", tmp_path / "r")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert re.fullmatch(f"Error: {re.escape(str(tmp_path / 'r'))}/{error}\n", res.stderr), res.stderr


def test_a_torn_last_line_is_ignored(shards, tmp_path):
    one, _ = shards[1]
    shutil.copytree(one, tmp_path / "r")
    with open(tmp_path / "r" / "results.jsonl", "a") as f:
        f.write(_finish_line(one)[:40])                            # its writer was killed mid-line
    res = trtx("report", tmp_path / "r", "--format", "json")
    assert res.returncode == 0 and json.loads(res.stdout)["summary"]["total"] == 2


def test_report_without_a_folder_reads_the_newest_under_results(shards, tmp_path):
    (one, _), (two, _) = shards[1], shards[2]
    res = trtx("report", cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1 and "results" in res.stderr
    shutil.copytree(two, tmp_path / "results" / "older")
    os.utime(tmp_path / "results" / "older" / "results.jsonl", (1, 1))
    shutil.copytree(one, tmp_path / "results" / "l0_cpu")           # what `make run` writes
    res = trtx("report", "--format", "json", cwd=tmp_path)
    assert res.returncode == 0 and json.loads(res.stdout)["summary"]["total"] == 2
    assert "results/l0_cpu" in res.stderr


def test_run_help_names_no_missing_durations_file():
    out = " ".join(trtx("run", "--help").stdout.split())
    assert "[default: testlists/durations.json]" not in out
    assert "RESULTS/durations.json" in out and "split by count" in out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_test_and_ends_with_a_report(tmp_path, sig):
    shutil.copytree(FIXTURE, tmp_path / "t")
    results = tmp_path / "results"
    proc = subprocess.Popen([TRTX, "run", "fx_kill", *map(str, _args(tmp_path / "t", results))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_start(results, "test_hangs")
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "trtx should be running a pytest child"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, out + err
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left behind: {[p.cmdline() for p in alive]}"
    log, summary = log_and_summary(out)
    stopped = "ERROR    suite/test_run.py::test_hangs ("
    assert log[-1].startswith(stopped) and log[-1].endswith(f"): interrupted by {sig.name}")
    assert any(line.startswith(stopped) for line in summary) and summary[-1] == "error: 2  passed: 1  total: 3"
    cases = {c.get("name"): c for c in ET.parse(results / "junit.xml").getroot().iter("testcase")}
    assert cases["test_hangs"].find("error").get("message") == f"interrupted by {sig.name}"
    assert cases["trtx run fx_kill"].find("error") is not None
    assert trtx("report", results).returncode == 1


def _results_dir(tmp_path, *events) -> str:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return tmp_path / "r"


RUN_START = {"event": "run_start", "context": "fx", "shard": None, "entries": 3}


def test_an_unknown_finish_outcome_is_one_line_naming_file_and_line(tmp_path):
    r = _results_dir(tmp_path, RUN_START, {"event": "finish", "nodeid": "a.py::t", "outcome": "weird"},
                     {"event": "run_end", "interrupted": None})
    res = trtx("report", r)
    assert res.returncode == 2 and res.stderr.startswith(f"Error: {r}/results.jsonl:2: finish event with unknown "
                                                         "outcome 'weird'") and res.stderr.count("\n") == 1, res.stderr


def test_an_empty_results_file_is_not_green(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.jsonl").write_bytes(b"")                # the run died before writing anything
    res = trtx("report", tmp_path / "r")
    assert res.returncode == 1 and "the run recorded nothing" in res.stdout and "error: 1  total: 1" in res.stdout
    res = trtx("report", tmp_path / "r", "--format", "junit")
    suite = ET.fromstring(res.stdout).find("testsuite")
    assert res.returncode == 1 and suite.get("errors") == "1"
    assert "the run recorded nothing" in suite.find("testcase/error").get("message")


def test_the_waived_count_is_a_part_of_the_total(tmp_path):
    waived = {"event": "finish", "nodeid": "a.py::w", "outcome": "xfailed", "waive": "XFAIL (https://b/1)"}
    r = _results_dir(tmp_path, RUN_START, {"event": "finish", "nodeid": "a.py::f", "outcome": "failed"},
                     {"event": "finish", "nodeid": "a.py::p", "outcome": "passed"}, waived,
                     {"event": "run_end", "interrupted": None})
    res = trtx("report", r)
    assert res.stdout.splitlines()[-1] == "failed: 1  passed: 1  xfailed: 1  total: 3 (1 waived)", res.stdout
    md = trtx("report", r, "--format", "markdown").stdout
    assert "**failed** 1 · **passed** 1 · **xfailed** 1 · **total** 3 (1 waived)" in md
    assert json.loads(trtx("report", r, "--format", "json").stdout)["summary"]["waived"] == 1
