"""`trtx list`, `trtx sysinfo` and `trtx waive` as a user runs them: the installed console script,
real files, exit codes, and one-line errors (exit 2) for bad input."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixture_tree"
TRTX = shutil.which("trtx", path=str(Path(sys.executable).parent))


def trtx(*args, cwd=None):
    return subprocess.run([TRTX, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture
def tree(tmp_path):
    """A writable copy of the fixture tree."""
    shutil.copytree(FIXTURE, tmp_path / "t")
    return tmp_path / "t"


def test_sysinfo_json_with_overrides():
    res = trtx("sysinfo", "--match", "gpu=B200", "--match", "system_gpu_count=8")
    info = json.loads(res.stdout)
    assert res.returncode == 0 and info["gpu"] == "B200" and info["system_gpu_count"] == "8"
    assert {"cpu", "linux_distribution_name", "linux_version", "host_mem_total_mib"} <= set(info)


def test_list_prints_the_applying_tests_in_block_order(tree):
    res = trtx("list", "fx_gpu", "--testdb", tree / "test-db", "--match", "gpu=B200",
               "--match", "system_gpu_count=4", "--match", "stage=pre_merge",
               "--match", "linux_distribution_name=debian")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["suite/test_basic.py::test_pass", "suite/test_basic.py::test_fail"]


def test_list_explain_names_the_failing_key(tree):
    res = trtx("list", "fx_gpu", "--testdb", tree / "test-db", "--explain", "--match", "system_gpu_count=2")
    assert res.returncode == 0
    assert "#   FAIL system_gpu_count: 2 (wanted gte 4, lte 4)" in res.stdout
    assert "does not apply" in res.stdout and "suite/" not in res.stdout


@pytest.mark.parametrize("make_bad,expected", [
    (lambda t: (t / "test-db" / "bad.yml").write_text("ctx:\n- tests:\n  - a.py TIMEOUT x\n"),
     "bad.yml:3: a.py: TIMEOUT needs minutes in parentheses"),
    (lambda t: (t / "test-db" / "bad.yml").write_text("ctx: [\n"), "bad.yml:2: malformed YAML"),
    (lambda t: None, "unknown context 'fx_cpuu' (did you mean: fx_cpu"),
])
def test_bad_input_is_one_line_and_exit_2(tree, make_bad, expected):
    make_bad(tree)
    res = trtx("list", "fx_cpuu", "--testdb", tree / "test-db")
    assert res.returncode == 2
    assert expected in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_bad_waive_line_is_reported_with_file_and_line(tree):
    line = len((tree / "waives.txt").read_text().splitlines()) + 1
    with open(tree / "waives.txt", "a") as f:
        f.write("suite/test_basic.py::test_pass SKIP no parentheses\n")
    res = trtx("waive", "list", "--waives-file", tree / "waives.txt")
    assert res.returncode == 2
    assert f"waives.txt:{line}: suite/test_basic.py::test_pass: the reason must be" in res.stderr


def test_waive_add_and_remove_edit_in_place(tree):
    waives = tree / "waives.txt"
    before = waives.read_text()
    args = ["--waives-file", waives, "--test-root", tree / "tests"]
    res = trtx("waive", "add", "suite/test_basic.py::test_param[c]", "--reason", "https://bugs.example/9", *args)
    assert res.returncode == 0, res.stderr
    assert waives.read_text() == before + "suite/test_basic.py::test_param[c] SKIP (https://bugs.example/9)\n"
    # waive list shows it; a second add of the same test is refused.
    assert "suite/test_basic.py::test_param[c] SKIP" in trtx("waive", "list", "--waives-file", waives).stdout
    assert trtx("waive", "add", "suite/test_basic.py::test_param[c]", "--reason", "x", *args).returncode == 2
    res = trtx("waive", "remove", "suite/test_basic.py::test_param[c]", "--waives-file", waives)
    assert res.returncode == 0 and waives.read_text() == before


def test_waive_add_refuses_unknown_tests_unless_forced(tree):
    waives = tree / "waives.txt"
    args = ["--waives-file", waives, "--test-root", tree / "tests"]
    res = trtx("waive", "add", "suite/test_basic.py::test_pas", "--reason", "x", *args)
    assert res.returncode == 2 and "closest: suite/test_basic.py::test_pass" in res.stderr
    assert trtx("waive", "add", "suite/test_basic.py::test_pas", "--reason", "x", "--force", *args).returncode == 0
    assert trtx("waive", "remove", "suite/nope.py::t", "--waives-file", waives).returncode == 2


def test_waive_check_exit_codes(tree):
    waives = tree / "waives.txt"
    clean = trtx("waive", "check", "--waives-file", waives, "--test-root", tree / "tests")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    line = len(waives.read_text().splitlines()) + 1
    with open(waives, "a") as f:
        f.write("suite/test_basic.py::test_gone SKIP (no link)\n")
    dirty = trtx("waive", "check", "--waives-file", waives, "--test-root", tree / "tests")
    assert dirty.returncode == 1
    assert f"waives.txt:{line}: matches no known test" in dirty.stdout
    assert f"waives.txt:{line}: reason has no bug link" in dirty.stdout


@pytest.mark.parametrize("text,where", [('{"a.py": 1.0,\n "b.py": }', ":2: not a durations file"),
                                        ('["a.py"]', ": a durations file maps each list entry")])
def test_run_with_a_bad_durations_file_is_one_line(tree, text, where):
    bad = tree / "durations.json"
    bad.write_text(text)
    res = trtx("run", "fx_cpu", "--testdb", tree / "test-db", "--waives-file", tree / "waives.txt",
               "--test-root", tree / "tests", "--results", tree / "r", "--shard", "1/2", "--durations", bad)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and f"{bad}{where}" in res.stderr


def test_run_where_k_matches_no_test_is_not_green(tree):
    """A typo in -k selects nothing: exit 2 and say so, never a green run of zero tests."""
    res = trtx("run", "fx_cpu", "--testdb", tree / "test-db", "--waives-file", tree / "waives.txt",
               "--test-root", tree / "tests", "--results", tree / "r", "-k", "no_such_test_anywhere")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "no test ran" in res.stderr and "-k no_such_test_anywhere matched none" in res.stderr
