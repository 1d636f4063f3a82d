"""`trtx run` and its history (cli/run/history.py): a history it cannot append to is refused
before any test runs; a signal's victims are no verdicts; shards sharing one history file report
together."""
import shutil
import signal
import sqlite3
import subprocess

from .test_run import FIXTURE, TRTX, _args, wait_for_start
from .test_run_ci import trtx


def tree(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "t")
    return tmp_path / "t"


def one_error_line(res, text):
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and text in res.stderr, res.stdout + res.stderr


def test_a_history_that_cannot_take_the_run_is_refused_before_any_test_runs(tmp_path):
    t = tree(tmp_path)
    first = trtx("run", "fx_ci", *_args(t, tmp_path / "ci", "-k", "gated"))
    assert first.returncode == 0, first.stdout + first.stderr
    ci_history = tmp_path / "ci" / "history" / "fx_ci.sqlite"
    results = tmp_path / "retry"
    one_error_line(trtx("run", "fx_retry", *_args(t, results, "--history", ci_history)),
                   f"{ci_history}: the history of fx_ci, not of fx_retry")
    (tmp_path / "a-file").write_text("")
    one_error_line(trtx("run", "fx_retry", *_args(t, results, "--history", tmp_path / "a-file" / "h.sqlite")),
                   "cannot create the history here")
    one_error_line(trtx("run", "fx_retry", *_args(t, results, "--history", ci_history, "--no-history")),
                   "--history FILE and --no-history: give one of them")
    # In the results folder, the next run would move it to previous/ and the one after delete it.
    one_error_line(trtx("run", "fx_retry", *_args(t, results, "--history", results / "h.sqlite")),
                   "inside the results folder")
    assert not results.exists()                       # no test ran


def test_report_history_of_a_run_appended_to_no_history_says_so(tmp_path):
    t, results = tree(tmp_path), tmp_path / "results"
    assert trtx("run", "fx_ci", *_args(t, results, "-k", "gated", "--no-history")).returncode == 0
    assert not (results / "history").exists()
    one_error_line(trtx("report", results, "--history"), "this run was appended to no history")


def test_a_signal_leaves_no_false_failure_in_the_history(tmp_path):
    t, results = tree(tmp_path), tmp_path / "results"
    proc = subprocess.Popen([TRTX, "run", "fx_kill", *map(str, _args(t, results))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_start(results, "test_hangs")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, out + err
    with sqlite3.connect(results / "history" / "fx_kill.sqlite") as db:
        assert db.execute("SELECT interrupted FROM runs").fetchall() == [("SIGTERM",)]
        # test_ok passed; test_hangs was stopped (no verdict), and the run's own error is no test.
        assert db.execute("SELECT nodeid, outcome FROM results").fetchall() == [("suite/test_run.py::test_ok", "passed")]
    res = trtx("report", results, "--history", "--format", "json")
    assert res.returncode == 0, res.stdout + res.stderr


def test_shards_sharing_a_history_file_report_together(tmp_path):
    t, shared = tree(tmp_path), tmp_path / "shared.sqlite"
    for k in (1, 2):
        trtx("run", "fx_ci", *_args(t, tmp_path / f"s{k}", "--shard", f"{k}/2", "--durations", t / "none.json",
                                    "--history", shared))
    res = trtx("report", tmp_path / "s1", tmp_path / "s2", "--history", "--format", "json")
    assert res.returncode == 1, res.stdout + res.stderr       # shard 2's test is below its threshold
    with sqlite3.connect(shared) as db:
        assert db.execute("SELECT run, shard FROM runs").fetchall() == [(1, "1/2"), (2, "2/2")]
