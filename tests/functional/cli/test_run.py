"""`trtx run` and `trtx report` over the fixture tree: real pytest children, real files."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil
import pytest

FIXTURE = Path(__file__).parent / "fixture_tree"
TRTX = shutil.which("trtx", path=str(Path(sys.executable).parent))


def _args(tree, results, *extra):
    return ["--testdb", tree / "test-db", "--waives-file", tree / "waives.txt", "--test-root", tree / "tests",
            "--results", results, *extra]


def trtx(*args, timeout=180):
    return subprocess.run([TRTX, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def outcomes(results_dir):
    res = trtx("report", results_dir, "--format", "json")
    assert res.returncode in (0, 1), res.stderr                   # 1: a test failed
    return {t["nodeid"]: t for t in json.loads(res.stdout)["tests"]}


def wait_for_start(results, name, timeout=60):
    """Until results.jsonl says that test `name` started."""
    log = results / "results.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (log.exists() and name in log.read_text()):
        time.sleep(0.1)


@pytest.fixture(scope="module")
def fx_run(tmp_path_factory):
    """One `trtx run fx_run`, shared by the assertions below."""
    tree = tmp_path_factory.mktemp("tree") / "t"
    shutil.copytree(FIXTURE, tree)
    results = tree.parent / "results"
    t0 = time.monotonic()
    res = trtx("run", "fx_run", *_args(tree, results))
    return tree, results, res, time.monotonic() - t0


def test_run_exit_code_and_outcomes(fx_run):
    _, results, res, _ = fx_run
    assert res.returncode == 1, res.stdout + res.stderr            # test_broken and test_hangs failed
    got = {k.split("::")[-1]: v for k, v in outcomes(results).items()}
    assert {k: v["outcome"] for k, v in got.items()} == {
        "test_ok": "passed", "test_broken": "failed", "test_hangs": "failed", "test_waived_skip": "skipped",
        "test_waived_xfail": "xfailed", "test_isolated": "passed", "test_slow_a": "passed"}
    assert "the engine returned the wrong answer" in got["test_broken"]["message"]
    assert "Timeout" in got["test_hangs"]["message"] and got["test_hangs"]["duration"] < 10


def test_results_keep_list_order_metrics_and_waives(fx_run):
    _, results, _, _ = fx_run
    names = [k.split("::")[-1] for k in outcomes(results)]
    assert names == ["test_ok", "test_broken", "test_hangs", "test_waived_skip", "test_waived_xfail",
                     "test_isolated", "test_slow_a"]
    got = outcomes(results)
    ok = got["suite/test_run.py::test_ok"]
    assert ok["metrics"]["accuracy"] == 91.25 and ok["metrics"]["n"] == 400
    assert got["suite/test_run.py::test_waived_skip"]["waive"] == "SKIP (https://bugs.example/10)"
    # ISOLATION: a process of its own.
    assert got["suite/test_run.py::test_isolated"]["metrics"]["pid"] != ok["metrics"]["pid"]


def test_junit_and_durations_are_written(fx_run):
    _, results, _, _ = fx_run
    suite = ET.parse(results / "junit.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("7", "2", "2")
    durations = json.loads((results / "durations.json").read_text())
    assert durations["suite/test_run.py::test_hangs"] >= 2.9


def test_report_formats_and_baseline(fx_run, tmp_path):
    _, results, _, _ = fx_run
    md = trtx("report", results, "--format", "markdown").stdout
    assert md.startswith("## trtx: ❌ failed") and "| ❌ failed | `suite/test_run.py::test_broken` |" in md
    # A second run as baseline: test_broken fixed, accuracy moved, test_ok newly failing.
    base = tmp_path / "base"
    shutil.copytree(results, base)
    lines = []
    for line in (base / "results.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev["event"] == "finish" and ev["nodeid"].endswith("test_broken"):
            ev["outcome"] = "passed"
        if ev["event"] == "finish" and ev["nodeid"].endswith("test_ok"):
            ev["metrics"]["accuracy"] = 93.0
        lines.append(json.dumps(ev))
    (base / "results.jsonl").write_text("\n".join(lines) + "\n")
    cmp = json.loads(trtx("report", results, "--format", "json", "--baseline", base).stdout)["baseline"]
    assert cmp["new_failures"] == ["suite/test_run.py::test_broken"]
    assert {"test": "suite/test_run.py::test_ok", "metric": "accuracy", "baseline": 93.0, "value": 91.25,
            "delta": -1.75} in cmp["metric_deltas"]
    back = json.loads(trtx("report", base, "--format", "json", "--baseline", results).stdout)["baseline"]
    assert back["fixed"] == ["suite/test_run.py::test_broken"]


def test_unknown_test_fails_early_with_suggestions(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "t")
    res = trtx("run", "fx_typo", *_args(tmp_path / "t", tmp_path / "results"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "lists.yml:" in res.stderr and "suite/test_run.py::test_okk names no test" in res.stderr
    assert "closest: suite/test_run.py::test_ok" in res.stderr
    assert not (tmp_path / "results").exists()                       # nothing ran


def test_k_filter_and_shards(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "t")
    tree = tmp_path / "t"
    res = trtx("run", "fx_run", *_args(tree, tmp_path / "r"), "-k", "test_ok or isolated")
    assert res.returncode == 0, res.stdout
    assert "fx_run: 7 list entries, filtered by -k test_ok or isolated," in res.stdout
    assert "total: 2" in res.stdout
    assert sorted(k.split("::")[-1] for k in outcomes(tmp_path / "r")) == ["test_isolated", "test_ok"]
    listed = {}
    for k in (1, 2):
        trtx("run", "fx_cpu", *_args(tree, tmp_path / f"s{k}"), "--shard", f"{k}/2")
        listed[k] = {t["entry"] for t in outcomes(tmp_path / f"s{k}").values()}
    assert listed[1] and listed[2] and not listed[1] & listed[2] and len(listed[1] | listed[2]) == 4
    assert trtx("run", "fx_cpu", *_args(tree, tmp_path / "x"), "--shard", "3/2").returncode == 2


def test_sigkill_mid_run_leaves_valid_results_and_no_process(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "t")
    results = tmp_path / "results"
    proc = subprocess.Popen([TRTX, "run", "fx_kill", *map(str, _args(tmp_path / "t", results))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_start(results, "test_hangs")
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "trtx should be running a pytest child"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left behind: {[p.cmdline() for p in alive]}"
    # Valid XML, and red: the finished test, the running one as an error, and the run cut short.
    suite = ET.parse(results / "junit.xml").getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == ["test_ok", "test_hangs", "trtx run fx_kill"]
    assert (suite.get("tests"), suite.get("errors"), suite.get("failures")) == ("3", "2", "0")
    assert cases["test_hangs"].find("error").get("message").startswith("did not finish")
    assert cases["trtx run fx_kill"].find("error").get("message").startswith("did not finish")
    got = outcomes(results)
    assert got["suite/test_run.py::test_ok"]["outcome"] == "passed"
    hang = got["suite/test_run.py::test_hangs"]
    assert hang["outcome"] == "error" and "never finished" in hang["message"]
    assert trtx("report", results).returncode == 1


def test_a_relative_results_folder_works(tmp_path):
    """The pytest children run in the test root; results given relative to the caller's
    directory must still land there (the default, `results`, is relative)."""
    tree = tmp_path / "t"
    shutil.copytree(FIXTURE, tree)
    res = subprocess.run([TRTX, "run", "fx_run", *map(str, _args(tree, "rel-results", "-k", "test_ok"))],
                         cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [t["outcome"] for t in outcomes(tmp_path / "rel-results").values()] == ["passed"]


def test_a_waive_without_a_reason_is_recorded_as_its_marker_alone(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "t")
    tree = tmp_path / "t"
    (tree / "waives.txt").write_text("suite/test_run.py::test_waived_skip SKIP # (https://bugs.example/10)\n")
    res = trtx("run", "fx_run", *_args(tree, tmp_path / "r"), "-k", "test_waived_skip")
    assert res.returncode == 0, res.stdout
    test = outcomes(tmp_path / "r")["suite/test_run.py::test_waived_skip"]
    assert test["outcome"] == "skipped" and test["waive"] == "SKIP" and test["message"].endswith("waived: SKIP")
