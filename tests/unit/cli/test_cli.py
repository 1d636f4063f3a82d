"""The installed `trtx` console script answers --help and --version."""
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path


def _trtx(*args):
    exe = shutil.which("trtx", path=str(Path(sys.executable).parent))
    assert exe, "the trtx console script is not installed next to this python"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def test_version():
    res = _trtx("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"trtx, version {version('trtx')}"


def test_help_explains_the_tool():
    res = _trtx("--help")
    assert res.returncode == 0
    assert "regression harness" in res.stdout and "Usage: trtx" in res.stdout


def test_import_names_are_namespaced(tmp_path):
    """trtx.cli and trtx.engine import from anywhere; no bare `engine` or `cli` is installed."""
    def run(code):
        return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert run("import trtx.cli, trtx.engine").returncode == 0
    for bare in ("engine", "cli"):
        assert "ModuleNotFoundError" in run(f"import {bare}").stderr
