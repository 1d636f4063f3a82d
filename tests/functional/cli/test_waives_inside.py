"""Waives that name tests inside a test-db entry (a file, folder or class), or a container around
it, applied to each collected test: through the real `trtx` console script, over the fixture tree."""
import shutil

from .test_run import FIXTURE, outcomes, trtx

FILE = "suite/test_waived_inside.py"


def _args(tree, *extra):
    return ["--testdb", tree / "test-db", "--waives-file", tree / "waives-inside.txt", *extra]


def test_waives_inside_a_file_entry_apply_to_its_tests(tmp_path):
    tree = tmp_path / "t"
    shutil.copytree(FIXTURE, tree)
    res = trtx("run", "fx_inside", *_args(tree, "--test-root", tree / "tests", "--results", tmp_path / "r"))
    assert res.returncode == 0, res.stdout + res.stderr              # nothing unwaived failed
    got = {k.removeprefix(FILE + "::"): v for k, v in outcomes(tmp_path / "r").items()}
    # The whole file's SKIP is for another platform (full:NO_SUCH_PLATFORM/): no test takes it; nor
    # the folder's SKIP (suite), which waives only an entry that is that folder.
    assert {k: (v["outcome"], v["waive"]) for k, v in got.items()} == {
        "test_size[small]": ("xpassed", "UNSTABLE (https://bugs.example/20)"),   # its function's waive
        "test_size[large]": ("skipped", "SKIP (https://bugs.example/21)"),       # its own: the most specific
        "TestKnownBug::test_still_broken": ("xfailed", "XFAIL (https://bugs.example/22)"),
        "TestKnownBug::test_fixed_meanwhile": ("xpassed", "XFAIL (https://bugs.example/22)"),
        "test_plain": ("passed", None),
        "test_timeout_from_waive": ("passed", None)}
    assert got["test_timeout_from_waive"]["metrics"]["timeout"] == 180            # TIMEOUT (3): its own limit
    assert "**total** 6 (4 waived)" in trtx("report", tmp_path / "r", "--format", "markdown").stdout


def test_list_markers_counts_the_waives_inside_an_entry():
    res = trtx("list", "fx_inside", "--markers", *_args(FIXTURE))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"{FILE}  waived inside: 4"]


def _run_with(tmp_path, context, waives):
    tree = tmp_path / "t"
    shutil.copytree(FIXTURE, tree)
    (tree / "w.txt").write_text(waives)
    res = trtx("run", context, "--testdb", tree / "test-db", "--waives-file", tree / "w.txt", "--test-root",
               tree / "tests", "--results", tmp_path / "r")
    assert res.returncode == 0, res.stdout + res.stderr
    return {k.removeprefix(FILE + "::"): (v["outcome"], v["waive"]) for k, v in outcomes(tmp_path / "r").items()}


def test_a_skip_naming_the_entry_skips_all_of_it_whatever_lies_inside(tmp_path):
    """As TensorRT-LLM never starts an entry waived SKIP: the test's own XFAIL does not win."""
    got = _run_with(tmp_path, "fx_inside", "suite/test_waived_inside.py SKIP (https://bugs.example/30)\n"
                                           "suite/test_waived_inside.py::test_plain XFAIL (https://bugs.example/31)\n")
    assert got["test_plain"] == ("skipped", "SKIP (https://bugs.example/30)")
    assert {outcome for outcome, _ in got.values()} == {"skipped"}


def test_a_folder_waive_without_the_entrys_arguments_does_not_waive_it(tmp_path):
    """`suite SKIP` names the folder entry `suite`, not `suite -k "..."` (TensorRT-LLM: another
    entry id, and no folder match inside); the waive with the entry's arguments does."""
    assert _run_with(tmp_path, "fx_inside_args", "suite SKIP (https://bugs.example/32)\n") == {
        "test_plain": ("passed", None)}
    assert _run_with(tmp_path / "2", "fx_inside_args", 'suite -k "test_waived_inside and test_plain" SKIP '
                                                       '(https://bugs.example/33)\n') == {
        "test_plain": ("skipped", "SKIP (https://bugs.example/33)")}
