"""`trtx report --history` and `trtx waive check --stale` as a user runs them: the installed console
script over history files built with append_run, in every format, with their exit codes; and a
history writer killed mid-append."""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trtx.cli.run.history import append_run, default_history_path, load_history
from trtx.cli.run.results import TestResult

FIXTURE = Path(__file__).parent / "fixture_tree"
TRTX = shutil.which("trtx", path=str(Path(sys.executable).parent))
ACC = "acc/test_accuracy.py::test_gsm8k_accuracy_with_mtp_nextn_2_on_tensor_parallel_4_ranks[tp4-mtp_nextn=2]"
OK = "acc/test_accuracy.py::test_ok"
T0 = 1_700_000_000.0


def trtx(*args, cwd=None, env=None):
    return subprocess.run([TRTX, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, "COLUMNS": "60", **(env or {})})


def record(path: Path, runs: list[dict[str, str]], context: str = "l0_x", accuracy=None, entries=None,
           waives=None) -> None:
    """One run per dict {nodeid: outcome}; ACC records accuracy[i] against a threshold of 80;
    `waives` {nodeid: label}: the waive each result ran under."""
    for i, outcomes in enumerate(runs):
        results = []
        for nodeid, outcome in outcomes.items():
            failing = outcome in ("failed", "error")
            metrics = {"accuracy": accuracy[i], "accuracy_threshold": 80.0} if nodeid == ACC and accuracy else {}
            results.append(TestResult(nodeid, (entries or {}).get(nodeid, nodeid.split("::")[0]), outcome, 2.0,
                                      "E   AssertionError: accuracy <below> 80" if failing else "", metrics,
                                      (waives or {}).get(nodeid)))
        append_run(path, context, None, results, T0 + 3600 * i, T0 + 3600 * i + 60, None)


@pytest.fixture
def history(tmp_path):
    """Five runs: ACC passes, fails, passes, then fails twice with a falling accuracy; OK passes."""
    path = tmp_path / "l0_x.sqlite"
    record(path, [{ACC: o, OK: "passed"} for o in ("passed", "failed", "passed", "failed", "failed")],
           accuracy=[90.0, 75.5, 88.0, 79.0, 70.25])
    return path


def _one_error_line(res, *words):
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and all(w in res.stderr for w in words), res.stderr


def test_plain_lines_worst_first_unwrapped_and_exit_1(history):
    res = trtx("report", "--history", history)
    assert res.returncode == 1, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == f"trtx history of l0_x: runs #1-#5 (5 of 5) in {history}, worst first:"
    assert lines[1] == (f"FAILED   {ACC}: failed x2 since run #4 (2023-11-15 01:13 UTC); AssertionError: accuracy "
                        "<below> 80; outcomes █▁█▁▁; flip rate 0.75 (3 of 4); accuracy █▃▇▄▁ 70.25 < 80 (-9.75)")
    assert lines[2] == f"PASSED   {OK}: passed x5; outcomes █████; flip rate 0.00 (0 of 4)"
    assert lines[3:] == ["failing now: 1  flipping or flaky: 0  tests: 2  runs #1-#5 (5 of 5)"]


def test_rich_table_in_a_terminal(history):
    res = trtx("report", "--history", history, "--runs", "3", env={"TTY_COMPATIBLE": "1", "COLUMNS": "220"})
    assert res.returncode == 1 and "\x1b[" in res.stdout                      # styled, for a terminal
    plain = re.sub(r"\x1b\[[0-9;]*m", "", res.stdout)
    header = next(line for line in plain.splitlines() if "┃ test" in line)
    assert [c.strip() for c in header.strip("┃ ").split("┃")] == \
        ["test", "now", "outcomes", "flip rate", "flaky", "first failing", "gated metrics"]
    assert "runs #3-#5 (3 of 5)" in plain and "0.50 (1 of 2)" in plain and "█▁▁" in plain
    assert "accuracy █▄▁ 70.25 < 80 (-9.75)" in plain


def test_markdown_and_json(history, tmp_path):
    md = trtx("report", "--history", history, "--format", "markdown")
    assert md.returncode == 1
    assert md.stdout.startswith("## trtx history of l0_x: ❌ 1 failing now\n")
    row = next(line for line in md.stdout.splitlines() if f"`{ACC}`" in line)
    assert "| failed x2 | █▁█▁▁ | 0.75 (3 of 4) |  | run #4 (2023-11-15 01:13 UTC) |" in row
    out = tmp_path / "h.json"
    res = trtx("report", "--history", history, "--format", "json", "-o", out, "--runs", "4")
    assert res.returncode == 1 and res.stdout == ""
    doc = json.loads(out.read_text())
    assert doc["history"] == {"path": str(history), "context": "l0_x", "runs": 5, "window": 4, "first_run": 2,
                              "last_run": 5}
    acc = doc["tests"][0]
    assert acc["nodeid"] == ACC and acc["streak"] == {"outcome": "failed", "length": 2}
    assert (acc["flips"], acc["pairs"], acc["flip_rate"]) == (2, 3, 2 / 3)
    assert acc["first_failing"] == {"run": 4, "time": T0 + 3 * 3600, "label": None}
    [metric] = acc["metrics"]
    assert (metric["last"], metric["threshold"], metric["margin"], metric["passing"]) == (70.25, 80, -9.75, False)
    assert [p["value"] for p in metric["points"]] == [75.5, 88.0, 79.0, 70.25]


def test_html_page_is_self_contained_with_strips_and_charts(history, tmp_path):
    page = tmp_path / "history.html"
    res = trtx("report", "--history", history, "--format", "html", "-o", page)
    assert res.returncode == 1 and res.stdout == "", res.stderr
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert not re.search(r"<script|\bsrc=|\bhref=|@import|url\(", html)          # nothing runs, nothing fetched
    # The outcome strip: one square per run, a tooltip with run, outcome and the (escaped) headline.
    assert html.count('class="failed"><title>') == 3
    assert "<title>#4 failed: AssertionError: accuracy &lt;below&gt; 80</title>" in html
    # The chart: values, a dashed threshold, points below it red.
    assert 'class="threshold"' in html and "stroke-dasharray" in html
    circles = re.findall(r'<circle [^>]*class="(pass|fail)"><title>([^<]*)</title>', html)
    assert circles == [("pass", "#1: accuracy 90 &gt;= 80"), ("fail", "#2: accuracy 75.5 &lt; 80"),
                       ("pass", "#3: accuracy 88 &gt;= 80"), ("fail", "#4: accuracy 79 &lt; 80"),
                       ("fail", "#5: accuracy 70.25 &lt; 80")]
    assert html.index(ACC) < html.index(OK)                                     # worst first
    stdout = trtx("report", "--history", history, "--format", "html")          # no -o: standard output
    assert stdout.stdout == html


def test_exit_0_when_every_test_passed_its_latest_run(tmp_path):
    path = tmp_path / "h.sqlite"
    record(path, [{ACC: "failed", OK: "passed"}, {ACC: "passed", OK: "skipped"}])
    res = trtx("report", "--history", path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"PASSED   {ACC}: passed x1; outcomes ▁█; flip rate 1.00 (1 of 1)" in res.stdout


def test_bare_history_reads_the_results_folders_list(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "results.jsonl").write_text(
        json.dumps({"event": "run_start", "context": "l0_x", "shard": None, "entries": 2, "time": T0}) + "\n")
    record(default_history_path(results, "l0_x"), [{OK: "passed"}] * 3)
    res = trtx("report", results, "--history", "--format", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["history"]["runs"] == 3
    # From the folder above, as `make run` leaves it: the newest results folder under results/.
    assert trtx("report", "--history", "--format", "json", cwd=tmp_path).returncode == 0
    # The file at the list's path holds another list's history: refused.
    other = tmp_path / "other.sqlite"
    record(other, [{OK: "passed"}], context="l0_y")
    shutil.copy(other, default_history_path(results, "l0_x"))
    _one_error_line(trtx("report", results, "--history"), "l0_x.sqlite: the history of l0_y, not of l0_x")


@pytest.mark.parametrize("args,words", [
    (["--history", "{garbage}"], ["garbage.sqlite: not a trtx history"]),
    (["--history", "{missing}"], ["missing.sqlite: no such history file"]),
    (["--history", "{tmp}"], ["is a folder", "trtx report DIR --history"]),
    (["--history", "{history}", "--format", "junit"], ["--format junit is for a run's results"]),
    (["--history", "{history}", "--baseline", "{tmp}"], ["--baseline compares two runs"]),
    (["{tmp}", "--runs", "3"], ["--runs is the window of --history"]),
    (["{tmp}", "--format", "html"], ["--format html is for --history"]),
    (["{tmp}", "--history"], ["results.jsonl here: not a trtx results directory"]),
])
def test_bad_input_is_one_line_and_exit_2(history, tmp_path, args, words):
    (tmp_path / "garbage.sqlite").write_bytes(b"not sqlite at all\n" * 100)
    names = {"garbage": tmp_path / "garbage.sqlite", "missing": tmp_path / "missing.sqlite", "tmp": tmp_path,
             "history": history}
    _one_error_line(trtx("report", *[a.format(**names) for a in args]), *words)


@pytest.fixture
def waives(tmp_path):
    """The fixture tree's waive file and test root (`waive check` collects its tests)."""
    tree = tmp_path / "t"
    shutil.copytree(FIXTURE, tree)
    return tree


MANY = 'unit_style/test_many.py -k "one or two"'
# The labels of the fixture's waives, as a run under them (`--run-waived`, UNSTABLE) records them.
FIXTURE_WAIVED = {"suite/test_basic.py::test_fail": "SKIP (https://bugs.example/1 (tracked))",
                  "unit_style/test_many.py::test_one": "UNSTABLE (https://bugs.example/3)"}


def test_waive_check_stale(waives, tmp_path):
    path = tmp_path / "fx.sqlite"
    # Line 2 waives test_fail, line 5 the tests of the entry MANY; four runs, the first failing.
    runs = [{"suite/test_basic.py::test_fail": o, "unit_style/test_many.py::test_one": o,
             "suite/test_basic.py::test_pass": "passed"} for o in ("failed", "passed", "passed", "passed")]
    record(path, runs, context="fx_cpu", entries={"unit_style/test_many.py::test_one": MANY}, waives=FIXTURE_WAIVED)
    check = ["waive", "check", "--waives-file", waives / "waives.txt", "--test-root", waives / "tests", "--stale",
             "--history", path]
    res = trtx(*check)
    assert res.returncode == 1, res.stdout + res.stderr
    wf = waives / "waives.txt"
    assert res.stdout.splitlines() == [
        f"{wf}:2: stale: suite/test_basic.py::test_fail passed its last 3 runs (runs #2-#4): "
        "trtx waive remove 'suite/test_basic.py::test_fail'",
        f"{wf}:5: stale: unit_style/test_many.py::test_one passed its last 3 runs (runs #2-#4): "
        f"trtx waive remove '{MANY}'",
        f"hint: 3 waives have no run of their tests in {path}: `trtx run --run-waived` runs waived tests, so that "
        "the history can tell when one is stale",
        "6 entries, 2 problems"]
    # Four passes in a row asked: the first run failed, so nothing is stale.
    res = trtx(*check, "--runs", "4")
    assert res.returncode == 0 and res.stdout.splitlines()[-1] == "6 entries, 0 problems", res.stdout


def test_waive_check_stale_finds_the_only_history_or_asks_for_one(waives, tmp_path):
    check = ["waive", "check", "--waives-file", waives / "waives.txt", "--test-root", waives / "tests", "--stale"]
    _one_error_line(trtx(*check, cwd=tmp_path), "no history file in results/history/ or results/*/history/: name the history")
    record(tmp_path / "results" / "history" / "fx_cpu.sqlite", [{"suite/test_basic.py::test_fail": "passed"}] * 3,
           context="fx_cpu", waives=FIXTURE_WAIVED)
    res = trtx(*check, cwd=tmp_path)
    assert res.returncode == 1 and ":2: stale: suite/test_basic.py::test_fail" in res.stdout, res.stdout
    record(tmp_path / "results" / "history" / "fx_gpu.sqlite", [{"suite/test_basic.py::test_fail": "passed"}],
           context="fx_gpu")
    _one_error_line(trtx(*check, cwd=tmp_path), "2 history files in results/history/")
    _one_error_line(trtx("waive", "check", "--history", tmp_path / "x.sqlite"), "--history and --runs are for --stale")
    (tmp_path / "bad.sqlite").write_text("not a history\n")
    _one_error_line(trtx(*check, "--history", tmp_path / "bad.sqlite"), "bad.sqlite: not a trtx history")


def test_a_writer_killed_mid_append_loses_nothing_recorded(tmp_path):
    """A writer SIGKILLed while inserting a large run (no Python cleanup runs, and SQLite has
    already written part of the run into the file): the next reader rolls the journal back and
    sees the run before it, whole, and nothing of the killed one."""
    path = tmp_path / "h.sqlite"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from trtx.cli.run.history import append_run
        from trtx.cli.run.results import TestResult

        class Killing(TestResult):
            @property
            def headline(self):
                os.kill(os.getpid(), signal.SIGKILL)

        path = Path({str(path)!r})
        append_run(path, "l0_x", None, [TestResult(f"t.py::t{{i}}", outcome="passed") for i in range(100)], 1, 2, None)
        doomed = [TestResult(f"t.py::t{{i}}", outcome="failed", message="E   " + "y" * 400) for i in range(30000)]
        append_run(path, "l0_x", None, doomed + [Killing("t.py::last")], 3, 4, None)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    assert Path(f"{path}-journal").exists()           # killed mid-write: SQLite's rollback journal is hot
    history = load_history(path)
    assert list(history.runs) == [1] and len(history.tests) == 100
    assert all(len(rs) == 1 and rs[0].outcome == "passed" for rs in history.tests.values())
    assert append_run(path, "l0_x", None, [], 5, 6, None) == 2
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
