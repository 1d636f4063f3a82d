"""test-db and waive-file corners: contexts, conditions, markers, quoting, comments, and errors that
name the file and line."""
import re
from pathlib import Path

import pytest

from trtx.cli.errors import UserError
from trtx.cli.lists.sysinfo import platform_names
from trtx.cli.lists.testdb import load_testdb
from trtx.cli.lists.testline import TestRef, parse_ref
from trtx.cli.lists.waives import WaiveFile, hygiene, parse_line, waives_for

FIXTURE = Path(__file__).parents[2] / "functional" / "cli" / "fixture_tree"    # read here, run there
CPU = {"system_gpu_count": 0, "linux_distribution_name": "debian"}
B200x4 = {"system_gpu_count": 4, "gpu": "B200", "linux_distribution_name": "debian", "stage": "pre_merge"}


@pytest.fixture(scope="module")
def db():
    return load_testdb(FIXTURE / "test-db")


def test_contexts_from_several_files(db):
    assert set(db.contexts) == {"fx_cpu", "fx_gpu", "fx_run", "fx_kill", "fx_typo", "fx_extra", "fx_ci", "fx_inside", "fx_inside_args", "fx_retry", "fx_waived"}
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
    ("full:sm100 accuracy/a.py SKIP (x)", "'full:sm100 accuracy/': a platform name holds no blank"),
])
def test_bad_waive_lines(line, message):
    with pytest.raises(UserError) as err:
        WaiveFile("waives.txt", "# header\n" + line + "\n")
    assert err.value.line == 2 and message in err.value.message


def test_platform_waives_apply_only_on_their_gpu():
    w = parse_line("full:B200/a.py::t SKIP (x)", "w", 1)
    assert w.applies_to({"gpu": "B200"}) and not w.applies_to({"gpu": "H100 80GB HBM3"})
    assert not w.applies_to({"system_gpu_count": 0})


@pytest.mark.parametrize("platform,info,match", [
    ("H100", {"gpu": "H100 PCIE"}, None),                      # a prefix of the gpu name is not its name
    ("H100_PCIe", {"gpu": "H100 PCIE"}, "H100_PCIE"),          # whole name, any case
    ("NVIDIA_H100_PCIe", {"gpu": "H100 PCIE"}, "NVIDIA_H100_PCIE"),
    ("RTX", {"gpu": "RTX PRO 6000 BLACKWELL SERVER EDITION"}, None),
    ("sm100", {"gpu": "B200", "compute_capability": "10.0"}, "sm100"),
    ("SM90", {"gpu": "H100 80GB HBM3", "compute_capability": "9.0"}, "sm90"),
    ("DGX_H100", {"gpu": "H100 80GB HBM3"}, None),
    ("DGX_H100", {"gpu": "H100 80GB HBM3", "product_name": "DGXH100"}, "DGX_H100"),
    ("RTXPro6000D", {"gpu": "B200", "platforms": ["B200", "RTXPro6000D"]}, "RTXPro6000D"),
])
def test_platform_names_match_whole(platform, info, match):
    w = parse_line(f"full:{platform}/a.py::t SKIP (x)", "w", 1)
    assert w.platform_match(info) == match and w.applies_to(info) is (match is not None)


def test_hygiene_finds_every_kind_of_problem():
    text = ("a.py::t SKIP (https://bugs/1)\n"
            "a.py::t XFAIL (https://bugs/2)\n"          # conflicts with line 1
            "a.py::t SKIP (https://bugs/3)\n"           # conflicts with line 2
            "b.py::u SKIP (no link here)\n"
            "gone.py::v SKIP (https://bugs/4)\n"
            "c.py::w SKIP # (https://chat/1): a comment, no reason\n"
            "c.py::w SKIP\n"                            # duplicate of line 6
            "c.py::w TIMEOUT (90)\n")                   # trtx keeps both, TensorRT-LLM this line
    problems = hygiene(WaiveFile("w", text), known=lambda ref: ref.test_id not in ("gone.py::v", "c.py::w"))
    found = {(w.line, what.split(" ")[0]) for w, what in problems if not what.startswith("matches")}
    assert found == {(2, "conflicts"), (3, "conflicts"), (4, "reason"), (6, "no"), (7, "no"), (7, "duplicate"),
                     (8, "conflicts")}
    said = {w.line: what for w, what in problems}
    assert said[3] == "conflicts (XFAIL vs SKIP) with line 2; this later line is the one that applies"
    assert said[8] == "conflicts (SKIP vs TIMEOUT) with line 7: trtx applies both, TensorRT-LLM only this later line"


def test_hygiene_compares_each_line_with_the_earlier_lines_of_its_kind():
    text = ("a.py::t SKIP (https://bugs/1)\n"
            "a.py::t TIMEOUT (90)\n"                    # beside the SKIP: both apply here
            "a.py::t XFAIL (https://bugs/2)\n"          # replaces the SKIP of line 1
            "b.py::u SKIP (https://bugs/3)\n"
            "b.py::u TIMEOUT (90)\n"
            "b.py::u SKIP (https://bugs/4)\n")          # a duplicate of line 4, not a conflict with 5
    said = {w.line: what for w, what in hygiene(WaiveFile("w", text), known=lambda ref: True)}
    assert said == {
        2: "conflicts (SKIP vs TIMEOUT) with line 1: trtx applies both, TensorRT-LLM only this later line",
        3: "conflicts (SKIP vs XFAIL) with line 1; this later line is the one that applies",
        5: "conflicts (SKIP vs TIMEOUT) with line 4: trtx applies both, TensorRT-LLM only this later line",
        6: "duplicate of line 4; this later line is the one that applies"}


def test_of_two_waives_with_one_name_the_later_applies():
    """As TensorRT-LLM keeps the last line of a name (its waives are a dict by test name)."""
    waives = [parse_line(line, "w", n) for n, line in enumerate(
        ["a.py::t SKIP (https://bugs/1)", "a.py XFAIL (https://bugs/2)", "a.py::t XFAIL (https://bugs/3)"], 1)]
    assert [w.line for w in waives_for(parse_ref("a.py::t"), waives)] == [3, 1, 2]


def test_a_test_listed_twice_runs_once_with_its_last_lines_markers(tmp_path):
    entries = _entries(tmp_path, "a.py::t TIMEOUT (30)", "b.py::u", "a.py::t TIMEOUT (90)")
    assert [(str(e.ref), e.timeout_min, e.line) for e in entries] == [("a.py::t", 90, 5), ("b.py::u", None, 4)]


def _entries(tmp_path, *lines):
    (tmp_path / "l.yml").write_text("ctx:\n- tests:\n" + "".join(f"  - {line}\n" for line in lines))
    return load_testdb(tmp_path).select("ctx", {})


def test_test_db_entries_read_as_tensorrt_llm_reads_them(tmp_path):
    entries = _entries(tmp_path,
                       "a.py::t TIMEOUT(60) # Cover https://bugs/1",         # no blank before '('
                       "b.py::t TIMEOUT (120) ISOLATION",
                       "'c.py::t[x] # quoted: YAML keeps it, the list grammar cuts it'",
                       "'# a quoted comment is no entry'",
                       """d/ -k "paged and not slow" ISOLATION""")
    got = [(str(e.ref), e.timeout_min, e.isolation) for e in entries]
    assert got == [("a.py::t", 60, False), ("b.py::t", 120, True), ("c.py::t[x]", None, False),
                   ('d/ -k "paged and not slow"', None, True)]
    assert entries[3].ref.pytest_args == ("-k", "paged and not slow")


@pytest.mark.parametrize("line,message", [
    ("'a.py::t[x#1] TIMEOUT (30)'", "unclosed '['"),           # '#' cuts even inside brackets
    ("a.py::t ISOLATION TIMEOUT (60)", "write ISOLATION after TIMEOUT"),
    ("a.py::t TIMEOUT (60) soon", "unexpected 'soon' after TIMEOUT (60)"),
    ("a.py::t SKIP (https://bugs/1)", "SKIP belongs in the waive file"),
])
def test_test_db_entry_errors(tmp_path, line, message):
    with pytest.raises(UserError, match=re.escape(message)) as err:
        _entries(tmp_path, line)
    assert err.value.line == 3


def test_a_quoted_entry_prints_as_written_and_equals_any_quoting():
    a = parse_line("""f.py -k "x and y" SKIP (r)""", "w", 1).ref
    b = parse_line("f.py -k 'x and y' SKIP (r)", "w", 1).ref
    assert a == b and hash(a) == hash(b)
    assert (str(a), str(b)) == ('f.py -k "x and y"', "f.py -k 'x and y'")


@pytest.mark.parametrize("line,marker,reason", [
    ("p.py::t[a] SKIP # (https://chat/p1)", "SKIP", None),          # the comment is no reason
    ("p.py::t[a] SKIP # https://bugs/5207477", "SKIP", None),
    ("p.py::t[a] SKIP", "SKIP", None),
    ("p.py::t[q] SKIP (SKIP due to timeout of quantization)", "SKIP", "SKIP due to timeout of quantization"),
    ("p.py::t TIMEOUT(90)", "TIMEOUT", "90"),
    ("p.py::t SKIP (https://bugs/1) trailing words", "SKIP", "https://bugs/1"),   # ignored, as there
])
def test_waive_comments_and_markers(line, marker, reason):
    w = parse_line(line, "w", 1)
    assert (w.marker, w.reason) == (marker, reason)


@pytest.mark.parametrize("line,message", [
    ("a.py::t SKIP ()", "empty reason"),
    ("a.py::t ISOLATION", "ISOLATION belongs in a test-db entry"),
    ("a.py::t SKIP (see XFAIL fix)", "reason must be in parentheses"),  # XFAIL is looked for first
])
def test_more_bad_waive_lines(line, message):
    with pytest.raises(UserError, match=message):
        parse_line(line, "w", 1)


@pytest.mark.parametrize("wanted,given,ok", [
    ("true", "True", True), ("true", "true", True), ("true", "TRUE", True), ("false", "False", True),
    ("true", "1", False), ("true", "yes", False), ("true", "False", False), ("'True'", "true", False),
])
def test_boolean_terms(tmp_path, wanted, given, ok):
    (tmp_path / "l.yml").write_text(f"ctx:\n- condition:\n    terms:\n      supports_fp8: {wanted}\n  tests: [a.py]\n")
    assert load_testdb(tmp_path).blocks("ctx")[0].condition.matches({"supports_fp8": given}) is ok


@pytest.mark.parametrize("data,line,message", [
    (b"ctx:\n- tests:\n  - a.py::t[\xe9]\n", 3, "not UTF-8 text (byte 0xe9)"),
    (b"ctx:\n- tests:\n  - a.py\x00\n", 3, "not a YAML text file"),
])
def test_binary_test_db_names_file_and_line(tmp_path, data, line, message):
    (tmp_path / "bad.yml").write_bytes(data)
    with pytest.raises(UserError, match=re.escape(message)) as err:
        load_testdb(tmp_path)
    assert (err.value.path, err.value.line) == (str(tmp_path / "bad.yml"), line)


@pytest.mark.parametrize("before,ref,after_remove", [
    (b"a.py::t SKIP (https://b/1)\r\nb.py::t SKIP (https://b/2)\r\n", "a.py::t", b"b.py::t SKIP (https://b/2)\r\n"),
    (b"a.py::t SKIP (https://b/1)\nb.py::t SKIP (https://b/2)", "b.py::t", b"a.py::t SKIP (https://b/1)"),
    (b"a.py::t SKIP (https://b/1)\r\nb.py::t SKIP (https://b/2)", "b.py::t", b"a.py::t SKIP (https://b/1)"),
    (b"", "a.py::t", b""),
])
def test_add_then_remove_gives_back_the_bytes(tmp_path, before, ref, after_remove):
    path = tmp_path / "w.txt"
    path.write_bytes(before)
    wf = WaiveFile.load(path)
    wf.add(parse_line("new.py::t SKIP (https://b/3)", "x", 0))
    ended = b"\r\n" if b"\r\n" in before else b"\n"
    if before.endswith(b"\n") or not before:       # the new entry is ended as the lines before it
        assert wf.text().encode() == before + b"new.py::t SKIP (https://b/3)" + ended
    else:                                            # no final newline: none after the entry either
        assert wf.text().encode() == before + ended + b"new.py::t SKIP (https://b/3)"
    wf.remove(TestRef("new.py::t"))
    assert wf.text().encode() == before
    wf.remove(TestRef(ref))                          # a remove alone keeps the other lines' bytes
    assert wf.text().encode() == after_remove


@pytest.mark.parametrize("text,line,message", [
    ("version: 0.0.1\nctx:\n- tests: [a.py]\nctx:\n- tests: [b.py]\n", 4, "duplicate context 'ctx' (first at line 2)"),
    ("ctx:\n- tests: [a.py]\n  tests: [b.py]\n", 3, "duplicate block key 'tests' (first at line 2)"),
    ("ctx:\n- condition:\n    terms: {a: 1}\n    terms: {b: 2}\n  tests: [a.py]\n", 4,
     "duplicate condition kind 'terms' (first at line 3)"),
    ("ctx:\n- condition:\n    terms:\n      stage: a\n      stage: b\n  tests: [a.py]\n", 5,
     "duplicate terms key 'stage' (first at line 4)"),
    ("ctx:\n- tests:\n  - a.py::t TIMEOUT (0)\n", 3, "TIMEOUT needs minutes in parentheses (more than 0)"),
])
def test_keys_given_twice_and_a_zero_timeout_are_refused(tmp_path, text, line, message):
    (tmp_path / "bad.yml").write_text(text)
    with pytest.raises(UserError) as err:
        load_testdb(tmp_path)
    assert (err.value.path, err.value.line) == (str(tmp_path / "bad.yml"), line) and message in err.value.message


def test_a_context_spread_over_files_stays_allowed(tmp_path):
    (tmp_path / "a.yml").write_text("ctx:\n- tests: [a.py]\n")
    (tmp_path / "b.yml").write_text("ctx:\n- tests: [b.py]\n")
    assert [str(e.ref) for e in load_testdb(tmp_path).select("ctx", {})] == ["a.py", "b.py"]


def test_a_byte_order_mark_is_read_through_and_kept(tmp_path):
    text = "\ufeffa.py::t SKIP (x)\nb.py::t SKIP (y)\n"
    wf = WaiveFile("w", text)
    assert [str(w.ref) for w in wf.entries] == ["a.py::t", "b.py::t"] and wf.text() == text
    wf.remove(TestRef("a.py::t"))
    assert wf.text() == "\ufeffb.py::t SKIP (y)\n"
    (tmp_path / "t.yml").write_text("\ufeffctx:\n- tests: [a.py]\n")
    assert [str(e.ref) for e in load_testdb(tmp_path).select("ctx", {})] == ["a.py"]


@pytest.mark.parametrize("info,names", [
    ({"gpu": "NVIDIA_B200"}, ["B200", "NVIDIA_B200"]),
    ({"gpu": "nvidia h100"}, ["H100", "NVIDIA_H100"]),
    ({"gpu": "B200", "compute_capability": "9"}, ["sm90", "B200", "NVIDIA_B200"]),
])
def test_platform_names_drop_the_vendor_and_read_a_bare_major(info, names):
    assert platform_names(info) == names
