"""The history store (cli/run/history.py) on real SQLite files, and the trends and stale waives
computed from it (cli/run/trends.py) on histories built run by run."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from trtx.cli.errors import UserError
from trtx.cli.lists.waives import WaiveFile
from trtx.cli.run.history import append_run, default_history_path, load_history
from trtx.cli.run.results import TestResult
from trtx.cli.run.trends import metric_spark, outcome_spark, stale_waives, streak_text, trends

ACC = "acc/test_acc.py::test_gsm8k[tp2]"
OK = "acc/test_acc.py::test_ok"
GONE = "old/test_old.py::test_removed"
T0 = 1_700_000_000.0


@pytest.fixture(autouse=True)
def no_ci_label(monkeypatch):
    for name in ("GITHUB_SHA", "CI_COMMIT_SHA", "GIT_COMMIT"):
        monkeypatch.delenv(name, raising=False)


def result(nodeid: str, outcome: str, **kw) -> TestResult:
    message = "E   AssertionError: accuracy below its threshold" if outcome in ("failed", "error") else ""
    return TestResult(nodeid, kw.pop("entry", nodeid.split("::")[0]), outcome, kw.pop("duration", 1.5),
                      kw.pop("message", message), **kw)


def gated(nodeid: str, outcome: str, accuracy: float, threshold: float = 80.0, **kw) -> TestResult:
    return result(nodeid, outcome, metrics={"accuracy": accuracy, "accuracy_threshold": threshold, "n": 200}, **kw)


def record_runs(path: Path, runs: list[list[TestResult]], context: str = "l0_x") -> None:
    for i, results in enumerate(runs):
        append_run(path, context, None, results, T0 + 100 * i, T0 + 100 * i + 60, None)


def test_append_creates_the_file_and_reads_back_every_field(tmp_path, monkeypatch):
    path = default_history_path(tmp_path / "results", "l0_x")
    assert path == tmp_path / "results" / "history" / "l0_x.sqlite"
    first = [result(OK, "passed", attempts=[{"outcome": "failed", "message": "", "duration": 1, "failure": "infra"}]),
             gated(ACC, "failed", 78.5, waive="XFAIL (https://bugs/1)")]
    assert append_run(path, "l0_x", "1/2", first, T0, T0 + 60, None) == 1
    monkeypatch.setenv("CI_COMMIT_SHA", "0123456789abcdef0123")
    monkeypatch.setenv("GIT_COMMIT", "ffffffffffffffff")          # the first one set wins
    assert append_run(path, "l0_x", "2/2", [result(OK, "skipped")], T0 + 100, T0 + 130, "SIGTERM") == 2

    history = load_history(path, "l0_x")
    assert history.context == "l0_x" and list(history.runs) == [1, 2]
    one, two = history.runs[1], history.runs[2]
    assert (one.context, one.shard, one.started, one.ended, one.interrupted, one.label) == \
        ("l0_x", "1/2", T0, T0 + 60, None, None)
    assert (two.shard, two.interrupted, two.label) == ("2/2", "SIGTERM", "0123456789ab") and two.host
    ok_first, ok_second = history.tests[OK]
    assert (ok_first.run, ok_first.outcome, ok_first.flaky, ok_first.attempts) == (1, "passed", True, 2)
    assert (ok_second.run, ok_second.outcome, ok_second.flaky, ok_second.attempts) == (2, "skipped", False, 1)
    [acc] = history.tests[ACC]
    assert (acc.entry, acc.duration, acc.headline, acc.waive) == \
        ("acc/test_acc.py", 1.5, "AssertionError: accuracy below its threshold", "XFAIL (https://bugs/1)")
    assert acc.metrics == {"accuracy": 78.5, "accuracy_threshold": 80.0, "n": 200}


def _one_line_error(excinfo, path: Path, *words: str) -> None:
    text = str(excinfo.value)
    assert "\n" not in text and text.startswith(f"{path}: "), text
    assert all(w in text for w in words), text


def test_another_lists_history_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "h.sqlite"
    record_runs(path, [[result(OK, "passed")]], context="l0_cpu")
    with pytest.raises(UserError) as e:
        append_run(path, "l0_a10", None, [result(OK, "failed")], T0, T0, None)
    _one_line_error(e, path, "the history of l0_cpu, not of l0_a10")
    with pytest.raises(UserError) as e:
        load_history(path, "l0_a10")
    _one_line_error(e, path, "the history of l0_cpu, not of l0_a10")
    assert list(load_history(path).runs) == [1]


@pytest.mark.parametrize("make,words", [
    (lambda p: p.write_bytes(b"\x00garbage, not a database\n" * 200), ("not a trtx history",)),
    (lambda p: sqlite3.connect(p).execute("CREATE TABLE t (x)").connection.commit(), ("without its meta table",)),
    (lambda p: p.mkdir(), ("is not a file",)),
    (lambda p: None, ("no such history file",)),
])
def test_a_file_that_is_no_history_is_one_line(tmp_path, make, words):
    path = tmp_path / "h.sqlite"
    make(path)
    with pytest.raises(UserError) as e:
        load_history(path)
    _one_line_error(e, path, *words)


def test_garbage_is_refused_by_append_too_and_not_overwritten(tmp_path):
    path = tmp_path / "h.sqlite"
    garbage = b"\x00garbage, not a database\n" * 200
    path.write_bytes(garbage)
    with pytest.raises(UserError) as e:
        append_run(path, "l0_x", None, [result(OK, "passed")], T0, T0, None)
    _one_line_error(e, path, "not a database")
    assert path.read_bytes() == garbage


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "h.sqlite"
    record_runs(path, [[result(OK, "passed")]])
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    for call in (lambda: load_history(path), lambda: append_run(path, "l0_x", None, [], T0, T0, None)):
        with pytest.raises(UserError) as e:
            call()
        _one_line_error(e, path, "newer trtx", "schema 99")


def test_a_failing_append_leaves_the_recorded_runs_and_no_part_of_its_own(tmp_path):
    path = tmp_path / "h.sqlite"
    record_runs(path, [[result(OK, "passed"), gated(ACC, "passed", 90)]] * 2)
    bad = [result(OK, "failed"), gated(ACC, "failed", 70), result("x.py::t", "passed", metrics={"m": object()})]
    with pytest.raises(TypeError):          # the third result's metrics are no JSON: mid-transaction
        append_run(path, "l0_x", None, bad, T0, T0, None)
    history = load_history(path)
    assert list(history.runs) == [1, 2]
    assert [r.outcome for r in history.tests[OK]] == ["passed", "passed"] and "x.py::t" not in history.tests
    assert append_run(path, "l0_x", None, [result(OK, "passed")], T0, T0, None) == 3


class Interrupting(TestResult):
    """A result whose reading is interrupted, as Ctrl-C or SIGTERM (trtx's Stopped) would be."""

    @property
    def headline(self) -> str:
        raise KeyboardInterrupt


def test_an_interrupted_append_leaves_the_recorded_runs_and_no_part_of_its_own(tmp_path):
    path = tmp_path / "h.sqlite"
    record_runs(path, [[result(OK, "passed")]])
    with pytest.raises(KeyboardInterrupt):
        append_run(path, "l0_x", None, [result(OK, "failed"), Interrupting("x.py::t")], T0, T0, None)
    history = load_history(path)
    assert list(history.runs) == [1] and [r.outcome for r in history.tests[OK]] == ["passed"]


def test_trends_streak_flip_rate_first_failing_and_metrics(tmp_path, monkeypatch):
    path = tmp_path / "h.sqlite"
    acc = ["passed", "failed", "passed", "skipped", "passed", "failed", "error"]
    runs = [[gated(ACC, outcome, accuracy, threshold)] for outcome, accuracy, threshold in
            zip(acc, [90, 70, 88, 0, 85, 79, 60], [80, 80, 80, 80, 82, 82, 82])]
    for run in runs[3:4]:
        run[0].metrics = {}                             # a skipped run records no metrics
    for i, run in enumerate(runs):
        run.append(result(OK, "passed", attempts=[{"outcome": "failed"}] if i in (4, 6) else []))
    runs[0].append(result(GONE, "failed"))               # failing, but not in the window below
    record_runs(path, runs[:5])
    monkeypatch.setenv("GITHUB_SHA", "abcdef0123456789")
    record_runs(path, runs[5:])

    found = trends(load_history(path), last=6)
    assert [r.number for r in found.runs] == [2, 3, 4, 5, 6, 7] and found.total_runs == 7
    assert [t.nodeid for t in found.tests] == [ACC, OK]            # failing first; GONE left the window
    acc_trend, ok_trend = found.tests
    assert (acc_trend.streak_outcome, acc_trend.streak_length) == ("error", 1)
    # Window runs 2-7: failed passed (skipped) passed failed error -> worked F T T F F: 2 flips in 4 pairs.
    assert (acc_trend.flips, acc_trend.pairs, acc_trend.flip_rate) == (2, 4, 0.5)
    assert acc_trend.first_failing.number == 6 and acc_trend.first_failing.label == "abcdef012345"
    assert acc_trend.failing_now and found.failing_now
    [accuracy] = acc_trend.metrics
    assert accuracy.threshold_name == "accuracy_threshold"
    assert [(p.run, p.value, p.threshold) for p in accuracy.points] == \
        [(2, 70, 80), (3, 88, 80), (5, 85, 82), (6, 79, 82), (7, 60, 82)]
    assert [p.passing for p in accuracy.points] == [False, True, True, False, False]
    assert (ok_trend.streak_outcome, ok_trend.streak_length, ok_trend.flip_rate, ok_trend.flaky) == ("passed", 7, 0, 2)
    assert ok_trend.first_failing is None and not ok_trend.failing_now
    assert outcome_spark(acc_trend.records) == "▁█▄█▁▁" and metric_spark(accuracy.points) == "▃█▇▆▁"

    everything = trends(load_history(path), last=100)
    # GONE's last result failed, but it is not in the list any more: not failing now, so not first.
    assert [t.nodeid for t in everything.tests] == [ACC, OK, GONE]
    gone = everything.tests[2]
    assert gone.first_failing.number == 1 and not gone.failing_now and everything.tests[0].pairs == 5


def test_worst_first_puts_flipping_and_flaky_tests_before_the_steady(tmp_path):
    path = tmp_path / "h.sqlite"
    outcomes = {"a.py::steady": "PPPP", "b.py::flaky": "PPPP", "c.py::flips_once": "FPPP", "d.py::flips_often": "PFPP"}
    record_runs(path, [[result(n, "passed" if o[i] == "P" else "failed",
                               attempts=[{"outcome": "failed"}] if n == "b.py::flaky" and i == 2 else [])
                        for n, o in outcomes.items()] for i in range(4)])
    found = trends(load_history(path))
    assert [t.nodeid for t in found.tests] == ["d.py::flips_often", "c.py::flips_once", "b.py::flaky", "a.py::steady"]
    assert not found.failing_now


WAIVES = """\
acc/test_acc.py::test_gsm8k SKIP (https://bugs/1)
acc/test_acc.py::test_mmlu XFAIL (https://bugs/2)
acc/test_acc.py::test_timeout TIMEOUT (90)
unit/test_many.py -k "one or two" UNSTABLE (https://bugs/3)
full:sm100/acc/test_acc.py::test_b200 XFAIL (https://bugs/4)
acc/test_acc.py::test_never SKIP (https://bugs/5)
acc/test_few.py SKIP (https://bugs/6)
acc/test_acc.py::test_regressed SKIP (https://bugs/7)
"""


def test_stale_waives(tmp_path):
    path = tmp_path / "h.sqlite"
    many = 'unit/test_many.py -k "one or two"'
    b200_label = "XFAIL (https://bugs/4)"
    runs = []
    gsm8k, mmlu, few = "SKIP (https://bugs/1)", "XFAIL (https://bugs/2)", "SKIP (https://bugs/6)"
    for i in range(5):
        runs.append([
            result("acc/test_acc.py::test_gsm8k[tp2]", "passed", waive=gsm8k),           # stale: 4 passes
            result("acc/test_acc.py::test_gsm8k[tp4]", "skipped" if i == 4 else "passed" if i else "failed",
                   waive=gsm8k),
            result("acc/test_acc.py::test_mmlu", "xpassed" if i != 3 else "xfailed", waive=mmlu),  # failed in its last 3
            result("acc/test_acc.py::test_timeout", "passed"),                          # TIMEOUT waives nothing
            result("unit/test_many.py::test_one", "passed", entry=many, waive="UNSTABLE (https://bugs/3)"),
            result("unit/test_many.py::test_three", "failed", entry="unit/test_many.py"),  # another entry
            # Passes where the waive did not apply (no label) say nothing: only 2 runs with it.
            result("acc/test_acc.py::test_b200", "xpassed" if i % 2 else "passed",
                   waive=b200_label if i % 2 else None),
            result("acc/test_acc.py::test_never", "skipped", waive="SKIP (https://bugs/5)"),
            *([result("acc/test_few.py::test_a", "passed", waive=few)] if i == 4 else []),  # 1 run: too few
            # Passed 3 runs before it regressed and was waived: those passes say nothing of the waive.
            result("acc/test_acc.py::test_regressed", "passed" if i < 3 else "skipped",
                   waive=None if i < 3 else "SKIP (https://bugs/7)"),
        ])
    record_runs(path, runs)
    waives = tmp_path / "waives.txt"
    waives.write_text(WAIVES)
    stale, never_ran = stale_waives(load_history(path), WaiveFile.load(waives).entries, 3)
    assert [(s.waive.line, s.nodeid, s.first_run, s.last_run) for s in stale] == [
        (1, "acc/test_acc.py::test_gsm8k[tp2]", 3, 5), (1, "acc/test_acc.py::test_gsm8k[tp4]", 2, 4),
        (4, "unit/test_many.py::test_one", 3, 5)]
    assert [w.line for w in never_ran] == [6, 8]
    # With 4 runs in a row asked, test_gsm8k[tp4] (3 passes after its failure) keeps the waive.
    stale, _ = stale_waives(load_history(path), WaiveFile.load(waives).entries, 4)
    assert [s.nodeid for s in stale] == ["unit/test_many.py::test_one"]
    # Two platform runs passed: stale when 2 are asked.
    stale, _ = stale_waives(load_history(path), WaiveFile.load(waives).entries, 2)
    assert "acc/test_acc.py::test_b200" in [s.nodeid for s in stale]


def test_a_test_that_last_ran_before_the_latest_run_is_not_failing_now(tmp_path):
    """Renamed, dropped from the list, or the placeholder of a crash: its last result is old."""
    path = tmp_path / "h.sqlite"
    record_runs(path, [[result("a.py::test_old", "failed"), result("a.py::test_x", "passed")],
                       [result("a.py::test_new", "passed"), result("a.py::test_x", "passed")]])
    found = trends(load_history(path), 20)
    old = next(t for t in found.tests if t.nodeid == "a.py::test_old")
    assert not old.failing_now and not found.failing_now
    assert streak_text(old) == "failed x1, not run since run #1"
