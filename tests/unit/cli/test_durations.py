"""--timeout takes a duration with units in every command; a bare number keeps the command's unit."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from trtx.cli.options import Duration

FIXTURE = Path(__file__).parent / "fixture_tree"
TRTX = shutil.which("trtx", path=str(Path(sys.executable).parent))


@pytest.mark.parametrize("text,bare_unit,seconds", [
    ("90s", "m", 90), ("30m", "s", 1800), ("1.5h", "s", 5400), ("2h30m", "s", 9000), ("1h 0.5m 3s", "m", 3633),
    ("45", "s", 45), ("45", "m", 2700), ("0.05", "m", 3), (".5", "h", 1800), ("10M", "s", 600)])
def test_durations_convert_to_seconds(text, bare_unit, seconds):
    assert Duration(bare_unit).convert(text, None, None) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ten", "5x", "-3", "3 m s", "1e3", "m", "inf", "0", "0s0m"])
def test_bad_durations_are_refused(text):
    with pytest.raises(click.BadParameter):
        Duration("s").convert(text, None, None)


@pytest.mark.parametrize("timeout", ["3s", "0.05"])
def test_run_timeout_takes_units_and_a_bare_number_is_minutes(tmp_path, timeout):
    """3s, or 0.05 (minutes): a hanging test with no TIMEOUT of its own is stopped after 3 s."""
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURE, tree)
    hang = "version: 0.0.1\nfx_hang:\n- tests:\n  - suite/test_run.py::test_hangs\n"   # no TIMEOUT of its own
    (tree / "test-db" / "hang.yml").write_text(hang)
    results = tmp_path / "results"
    res = subprocess.run([TRTX, "run", "fx_hang", "--testdb", tree / "test-db", "--waives-file", tree / "waives.txt",
                          "--test-root", tree / "tests", "--results", results, "--timeout", timeout],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    events = [json.loads(line) for line in (results / "results.jsonl").read_text().splitlines()]
    finish = next(e for e in events if e["event"] == "finish")
    assert finish["outcome"] == "failed" and "Timeout (>3.0s)" in finish["message"], finish
