"""`trtx run --run-waived` runs SKIP-waived tests as XFAIL, so that a waive that is no longer needed
shows (xpassed) without failing the run; `trtx waive check --stale` then names it from the history."""
import json
import shutil

from .test_run import FIXTURE, _args
from .test_run_ci import trtx

STILL_BROKEN = "suite/test_waived_run.py::test_still_broken"
FIXED = "suite/test_waived_run.py::test_fixed_since"


def test_run_waived_finds_the_waive_that_is_no_longer_needed(tmp_path):
    tree, results = tmp_path / "t", tmp_path / "results"
    shutil.copytree(FIXTURE, tree)
    waives = tree / "waives-run.txt"
    plain = trtx("run", "fx_waived", *_args(tree, results, "--waives-file", waives))
    assert plain.returncode == 0 and "skipped: 2  total: 2 (2 waived)" in plain.stdout
    res = trtx("run", "fx_waived", *_args(tree, results, "--waives-file", waives, "--run-waived"))
    assert res.returncode == 0, res.stdout + res.stderr          # a waived test that fails fails nothing
    tests = {t["nodeid"]: t for t in json.loads(trtx("report", results, "--format", "json").stdout)["tests"]}
    assert tests[STILL_BROKEN]["outcome"] == "xfailed" and tests[FIXED]["outcome"] == "xpassed"
    assert tests[FIXED]["waive"] == "SKIP (https://bugs.example/21)"
    assert f"waive may be stale: {FIXED} passed" in res.stdout
    history = results / "history" / "fx_waived.sqlite"
    check = trtx("waive", "check", "--stale", "--history", history, "--runs", "1", "--waives-file", waives,
                 "--test-root", tree / "tests")
    assert check.returncode == 1
    stale = [line for line in check.stdout.splitlines() if "stale" in line]
    assert len(stale) == 1 and stale[0].startswith(f"{waives}:3: stale: {FIXED}"), check.stdout
    # The run before did not run the waived tests: two runs in a row are not there yet.
    two = trtx("waive", "check", "--stale", "--history", history, "--runs", "2", "--waives-file", waives,
               "--test-root", tree / "tests")
    assert not [line for line in two.stdout.splitlines() if ": stale:" in line], two.stdout
