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


def test_waive_check_knows_a_parametrized_function_by_its_name(tree):
    """`f.py::test_param` covers test_param[a b] and test_param[c] (docs: rule 2): it names tests."""
    (tree / "w.txt").write_text("suite/test_basic.py::test_param XFAIL (https://bugs.example/1)\n")
    res = trtx("waive", "check", "--waives-file", tree / "w.txt", "--test-root", tree / "tests")
    assert res.returncode == 0, res.stdout + res.stderr


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


def test_a_byte_order_mark_hides_no_waive(tree):
    waives = tree / "waives.txt"
    bom = b"\xef\xbb\xbf"
    waives.write_bytes(bom + b"suite/test_basic.py::test_pass SKIP (https://bugs.example/5)\n" + waives.read_bytes())
    before = waives.read_bytes()
    args = ["--testdb", tree / "test-db", "--waives-file", waives, "--markers"]
    assert "suite/test_basic.py::test_pass  waived: SKIP (https://bugs.example/5)" in trtx("list", "fx_cpu", *args).stdout
    add = trtx("waive", "add", "suite/test_basic.py::test_pass", "--reason", "x", "--waives-file", waives, "--force")
    assert add.returncode == 2 and "already waived" in add.stderr
    res = trtx("waive", "remove", "suite/test_basic.py::test_pass", "--waives-file", waives)
    assert res.returncode == 0, res.stderr
    assert waives.read_bytes() == bom + before[len(bom) + len(b"suite/test_basic.py::test_pass SKIP (https://bugs.example/5)\n"):]


@pytest.mark.parametrize("args,message", [
    (["--marker", "TIMEOUT", "--reason", "1.5"], "a TIMEOUT waive takes whole minutes"),
    (["--platform", "sm 90", "--reason", "x"], "--platform 'sm 90': a platform name must be non-empty, without blanks"),
    (["--platform", "", "--reason", "x"], "--platform '': a platform name must be non-empty"),
    (["--platform", "a/b", "--reason", "x"], "--platform 'a/b': a platform name must be"),
])
def test_waive_add_refuses_what_reads_differently(tree, args, message):
    before = (tree / "waives.txt").read_bytes()
    res = trtx("waive", "add", "suite/test_basic.py::test_pass", *args, "--waives-file", tree / "waives.txt", "--force")
    assert res.returncode == 2 and message in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert (tree / "waives.txt").read_bytes() == before


@pytest.mark.parametrize("args", [["--platform", ""], ["--platform", "dgx h100"], ["--match", "platform="]])
def test_bad_platform_names_are_refused(args):
    res = trtx("sysinfo", *args)
    assert res.returncode == 2 and "a platform name must be non-empty, without blanks or '/'" in res.stderr


def test_a_folder_as_the_waive_file_or_a_file_as_the_test_db_is_one_line(tree):
    for cmd in (["waive", "list"], ["waive", "check", "--test-root", tree / "tests"],
                ["waive", "add", "a.py::t", "--reason", "x", "--force"], ["waive", "remove", "a.py::t"]):
        res = trtx(*cmd, "--waives-file", tree)
        assert res.returncode == 2 and res.stderr == f"Error: {tree}: is a folder, not a file\n", (cmd, res.stderr)
    res = trtx("list", "fx_cpu", "--testdb", tree / "waives.txt")
    assert res.returncode == 2 and res.stderr == f"Error: {tree / 'waives.txt'}: is a file, not a test-db folder\n"


def test_editing_outside_a_project_never_edits_the_bundled_waive_file(tmp_path):
    bundled = Path(__file__).resolve().parents[3] / "waives" / "waives.txt"
    before = bundled.read_bytes()
    for cmd in (["add", "a.py::t", "--reason", "x", "--force"], ["remove", "a.py::t"]):
        res = trtx("waive", *cmd, cwd=tmp_path)
        assert res.returncode == 2 and "no waives/waives.txt in this folder" in res.stderr and "--waives-file" in res.stderr
    assert bundled.read_bytes() == before
    (tmp_path / "waives").mkdir()
    (tmp_path / "waives" / "waives.txt").write_text("")
    assert trtx("waive", "add", "a.py::t", "--reason", "x", "--force", cwd=tmp_path).returncode == 0
    assert (tmp_path / "waives" / "waives.txt").read_text() == "a.py::t SKIP (x)\n"
    assert "else the one bundled with trtx" in " ".join(trtx("waive", "list", "--help").stdout.split())


def test_a_waive_without_a_reason_shows_its_marker_alone(tree):
    waives = tree / "waives.txt"
    waives.write_text("suite/test_basic.py::test_pass SKIP # (https://bugs.example/5)\n")
    res = trtx("list", "fx_cpu", "--testdb", tree / "test-db", "--waives-file", waives, "--markers")
    assert "suite/test_basic.py::test_pass  waived: SKIP\n" in res.stdout and "None" not in res.stdout


def test_list_explain_prints_the_waives_in_line_order(tree):
    res = trtx("list", "fx_cpu", "--testdb", tree / "test-db", "--waives-file", tree / "waives.txt", "--explain")
    lines = [int(line.split()[2].rstrip(":")) for line in res.stdout.splitlines() if line.startswith("#   line ")]
    assert lines == sorted(lines) and len(lines) == 3, res.stdout
