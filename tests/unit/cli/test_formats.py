"""test-db and waive-file corners: contexts, conditions, markers, quoting, comments, and errors that
name the file and line."""
from pathlib import Path

import pytest

from trtx.cli.errors import UserError
from trtx.cli.testdb import load_testdb
from trtx.cli.testline import TestRef
from trtx.cli.waives import WaiveFile, hygiene, parse_line

FIXTURE = Path(__file__).parent / "fixture_tree"
CPU = {"system_gpu_count": 0, "linux_distribution_name": "debian"}
B200x4 = {"system_gpu_count": 4, "gpu": "B200", "linux_distribution_name": "debian", "stage": "pre_merge"}


@pytest.fixture(scope="module")
def db():
    return load_testdb(FIXTURE / "test-db")


def test_contexts_from_several_files(db):
    assert set(db.contexts) == {"fx_cpu", "fx_gpu", "fx_run", "fx_kill", "fx_typo", "fx_extra"}
    assert db.blocks("fx_extra")[0].path.endswith("more.yaml")
    assert [str(t.ref) for t in db.select("fx_extra", CPU)] == ["suite/test_basic.py::test_param[c]"]


def test_markers_and_raw_pytest_args(db):
    tests = {t.ref.test_id: t for t in db.select("fx_cpu", CPU)}
    assert tests["suite/test_more.py::TestGroup::test_x"].timeout_min == 2
    many = tests["unit_style/test_many.py"]
    assert many.ref.pytest_args == ("-k", "one or two") and many.isolation and many.timeout_min is None
    assert "suite/test_basic.py::test_param[a b]" in tests          # a space inside the brackets


def test_block_order_and_each_test_once(db):
    info = {**B200x4, "system_gpu_count": 8}
    # Block 1 wants exactly 4 GPUs; block 2 (8 or more) applies and repeats test_pass once only.
    assert [t.ref.test_id for t in db.select("fx_gpu", info)] == [
        "suite/test_more.py::TestGroup::test_x", "suite/test_basic.py::test_pass"]
    both = db.select("fx_gpu", {**info, "system_gpu_count": 4})
    assert [t.ref.test_id for t in both] == ["suite/test_basic.py::test_pass", "suite/test_basic.py::test_fail"]


@pytest.mark.parametrize("gpu,applies", [("B200", True), ("h100 80gb hbm3", True), ("A10", False)])
def test_wildcard_lists_are_any_of_and_case_insensitive(db, gpu, applies):
    block = db.blocks("fx_gpu")[0]
    assert block.condition.matches({**B200x4, "gpu": gpu}) is applies


def test_a_key_the_system_lacks_does_not_match(db):
    block = db.blocks("fx_gpu")[0]
    no_stage = {k: v for k, v in B200x4.items() if k != "stage"}
    checks = {c.key: c for c in block.condition.checks(no_stage)}
    assert not checks["stage"].ok and checks["stage"].actual is None
    assert block.condition.matches({**no_stage, "stage": "pre_merge"})     # what --match supplies


def test_unknown_context_suggests_the_closest(db):
    with pytest.raises(UserError, match=r"unknown context 'fx_gpus' \(did you mean: fx_gpu"):
        db.blocks("fx_gpus")


@pytest.mark.parametrize("text,line,message", [
    ("ctx:\n- condition:\n    ranges: {n: {gte: 1}\n  tests: []\n", 4, "malformed YAML"),
    ("ctx:\n  condition: {}\n", 2, "a list of blocks"),
    ("ctx:\n- condition:\n    ranges:\n      n: {gte: four}\n  tests: [a.py]\n", 4, "gte needs a number"),
    ("ctx:\n- condition:\n    ranges:\n      n: {atleast: 1}\n  tests: [a.py]\n", 4, "unknown bound 'atleast'"),
    ("ctx:\n- condition:\n    bounds: {}\n  tests: [a.py]\n", 3, "unknown condition kind 'bounds'"),
    ("ctx:\n- tests:\n  - a.py::t TIMEOUT 60\n", 3, "TIMEOUT needs minutes in parentheses"),
    ("ctx:\n- tests:\n  - 42\n", 3, "a test line must be a string"),
    ("ctx:\n- condition: {}\n", 2, "no 'tests' list"),
])
def test_bad_test_db_names_file_and_line(tmp_path, text, line, message):
    (tmp_path / "bad.yml").write_text(text)
    with pytest.raises(UserError) as err:
        load_testdb(tmp_path)
    assert err.value.path == str(tmp_path / "bad.yml") and err.value.line == line
    assert message in err.value.message


def test_waive_file_round_trips_byte_for_byte(tmp_path):
    text = (FIXTURE / "waives.txt").read_text() + "# trailing comment without newline"
    wf = WaiveFile(tmp_path / "w.txt", text)
    assert wf.text() == text
    assert len(wf.entries) == 6


def test_waive_line_forms():
    w = parse_line("full:B200/a.py::T::t[x (y)] XFAIL (see (nested) https://b/1)", "w", 7)
    assert (w.platform, w.ref.test_id, w.marker, w.reason, w.line) == ("B200", "a.py::T::t[x (y)]", "XFAIL",
                                                                     "see (nested) https://b/1", 7)
    k = parse_line('unit/f.py -k "a and not b" UNSTABLE (flaky)', "w", 1)
    assert k.ref == TestRef("unit/f.py", ("-k", "a and not b"))
    # Quoting does not matter: the same test, written differently, is the same test.
    assert parse_line("unit/f.py -k 'a and not b' SKIP", "w", 2).ref == k.ref
    assert parse_line("a.py::t TIMEOUT (90)", "w", 1).timeout_min == 90


@pytest.mark.parametrize("line,message", [
    ("a.py::t", "no marker"),
    ("a.py::t SKIP because it is broken", "reason must be in parentheses"),
    ("a.py::t TIMEOUT (soon)", "TIMEOUT needs minutes"),
    ("full:a.py::t SKIP (x)", "'full:' must be followed by PLATFORM/"),
])
def test_bad_waive_lines(line, message):
    with pytest.raises(UserError) as err:
        WaiveFile("waives.txt", "# header\n" + line + "\n")
    assert err.value.line == 2 and message in err.value.message


def test_platform_waives_apply_only_on_their_gpu():
    w = parse_line("full:B200/a.py::t SKIP (x)", "w", 1)
    assert w.applies_to({"gpu": "B200"}) and not w.applies_to({"gpu": "H100 80GB HBM3"})
    assert not w.applies_to({"system_gpu_count": 0})
    h = parse_line("full:H100/a.py::t SKIP (x)", "w", 1)
    assert h.applies_to({"gpu": "H100 80GB HBM3"})


def test_hygiene_finds_every_kind_of_problem():
    text = ("a.py::t SKIP (https://bugs/1)\n"
            "a.py::t XFAIL (https://bugs/2)\n"          # conflicts with line 1
            "a.py::t SKIP (https://bugs/3)\n"           # duplicate of line 1
            "b.py::u SKIP (no link here)\n"
            "gone.py::v SKIP (https://bugs/4)\n")
    problems = hygiene(WaiveFile("w", text), known=lambda ref: ref.test_id != "gone.py::v")
    found = {(w.line, what.split(" ")[0]) for w, what in problems}
    assert found == {(2, "conflicts"), (3, "duplicate"), (4, "reason"), (5, "matches")}
