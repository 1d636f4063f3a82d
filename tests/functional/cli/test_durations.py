"""`trtx run --timeout` takes a duration with units, and a bare number keeps the command's unit
(minutes): a hanging test of the fixture tree is stopped after 3 s either way."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixture_tree"
TRTX = shutil.which("trtx", path=str(Path(sys.executable).parent))


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
