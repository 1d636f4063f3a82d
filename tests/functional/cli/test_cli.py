"""The installed `trtx` console script answers --help and --version, installs only namespaced
import names, and runs `trtx launch` with one-line errors, temporary logs and timeouts with units
(the 1-rank mpirun jobs are marked multirank)."""
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest


def _trtx(*args, env=None):
    exe = shutil.which("trtx", path=str(Path(sys.executable).parent))
    assert exe, "the trtx console script is not installed next to this python"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, env=env)


def test_version():
    res = _trtx("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"trtx, version {version('trtx')}"


def test_help_explains_the_tool():
    res = _trtx("--help")
    assert res.returncode == 0
    assert "regression harness" in res.stdout and "Usage: trtx" in res.stdout


def test_help_and_the_engine_options_load_without_torch():
    """trtx eval's options are EngineConfig's fields; reading them (trtx --help, trtx eval --help)
    must not import torch, which takes seconds: it loads when a configuration is built."""
    code = ("import sys; from trtx.cli.main import cli; from trtx.engine.engine_config import options; "
            "cli.get_command(None, 'eval'); options(); print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "False", res.stdout + res.stderr


def test_import_names_are_namespaced(tmp_path):
    """trtx.cli and trtx.engine import from anywhere; no bare `engine` or `cli` is installed."""
    def run(code):
        return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert run("import trtx.cli, trtx.engine").returncode == 0
    for bare in ("engine", "cli"):
        assert "ModuleNotFoundError" in run(f"import {bare}").stderr


def test_launch_refuses_zero_ranks_in_one_line():
    res = _trtx("launch", "-n", "0", "--", "true")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "Error: Invalid value for '-n': 0 is not in the range x>=1." in res.stderr


@pytest.mark.multirank
def test_launch_removes_its_temporary_logs_only_when_the_job_succeeds(tmp_path):
    tmp = dict(os.environ, TMPDIR=str(tmp_path))
    res = _trtx("launch", "-n", "1", "--quiet", "--", sys.executable, "-c", "print('hi')", env=tmp)
    assert res.returncode == 0 and "temporary logs removed" in res.stdout, res.stdout + res.stderr
    assert not list(tmp_path.glob("trtx-launch-*"))
    res = _trtx("launch", "-n", "1", "--quiet", "--", sys.executable, "-c", "raise SystemExit(3)", env=tmp)
    kept = list(tmp_path.glob("trtx-launch-*"))
    assert res.returncode == 3 and len(kept) == 1 and f"logs in {kept[0]}" in res.stdout, res.stdout


def test_every_timeout_takes_units_and_help_says_what_a_bare_number_is():
    for command, unit, default in (("run", "minutes", "30m"), ("launch", "seconds", "1h"), ("eval", "seconds", "30m")):
        res = _trtx(command, "--help")
        text = " ".join(res.stdout.split())
        assert res.returncode == 0 and f"a bare number is {unit}. [default: {default}]" in text, text
    res = _trtx("launch", "-n", "1", "--timeout", "ten", "--", "true")
    assert res.returncode == 2 and "Error: Invalid value for '--timeout': 'ten' is not a duration" in res.stderr


@pytest.mark.multirank
def test_launch_timeout_in_minutes_ends_the_job(tmp_path):
    res = _trtx("launch", "-n", "1", "--quiet", "--log-dir", str(tmp_path), "--timeout", "0.05m", "--",
                sys.executable, "-c", "import time; time.sleep(50)")
    took = re.search(r"timed out after (\d+) s", res.stdout)
    assert res.returncode == 124 and took and 3 <= int(took[1]) < 30, res.stdout   # 3 s, then the stacks
