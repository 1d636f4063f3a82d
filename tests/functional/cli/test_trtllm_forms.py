"""TensorRT-LLM's list forms through the installed `trtx` console script: comments and markers as
its test_list_parser reads them, full:PLATFORM/ waives against platform names, entries printed as
written, boolean terms, bad bytes, and waive edits that change nothing but the edited entry."""
import json
import os
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).parent
FORMS = HERE / "fixture_trtllm"           # test-db and waive lines in the shapes TensorRT-LLM uses
TRTX = shutil.which("trtx", path=str(Path(sys.executable).parent))
B200x8 = ["--match", "gpu=B200", "--match", "system_gpu_count=8", "--match", "linux_distribution_name=ubuntu",
          "--match", "cpu=x86_64", "--match", "stage=post_merge", "--match", "backend=pytorch",
          "--match", "orchestrator=mpi", "--match", "compute_capability=10.0"]


def trtx(*args, timeout=120):
    return subprocess.run([TRTX, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def forms(*args):
    return trtx(*args, "--testdb", FORMS / "test-db", "--waives-file", FORMS / "waives.txt")


def waive_list(*args):
    return trtx("waive", "list", *args, "--waives-file", FORMS / "waives.txt")


def test_list_prints_entries_as_written_without_comments_and_markers():
    res = forms("list", "l0_fx_dgx", *B200x8)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "accuracy/test_fx.py::TestModelB::test_nvfp4_8gpus[throughput]",
        "test_e2e_fx.py::test_mtp_bench",
        "accuracy/test_fx.py::TestModelB::test_breakable_cuda_graph",
        "examples/test_fx_example.py::test_smoke[pp2]",
        'unittest/fx/multi_gpu_modeling -k "deepseek"',
        'unittest/fx/moe/test_moe_fx.py::test_moe_multi_gpu -k "CUTLASS and FP8 and not FP8_BLOCK_SCALES"',
        "accuracy/test_fx.py::TestModelA::test_fp8[tp4-mtp_nextn=2]",
        "unittest/fx/tools/test_tool_fx.py"]


def test_timeout_without_a_blank_is_a_timeout():
    res = forms("list", "l0_fx_dgx", "--markers", *B200x8)
    lines = {line.split("  ")[0]: line for line in res.stdout.splitlines()}
    assert lines["test_e2e_fx.py::test_mtp_bench"] == "test_e2e_fx.py::test_mtp_bench  TIMEOUT (60)"
    assert lines["accuracy/test_fx.py::TestModelB::test_breakable_cuda_graph"].startswith(
        "accuracy/test_fx.py::TestModelB::test_breakable_cuda_graph  TIMEOUT (120) ISOLATION")


def test_every_waive_line_form_parses():
    res = waive_list("--all")
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == len((FORMS / "waives.txt").read_text().splitlines()) == 25
    assert ("19: perf/test_perf_fx.py::test_perf[bart_large_cnn-plugin-float16-bs:8-input_output_len:60,20] SKIP"
            in res.stdout.splitlines())                     # `SKIP # (url)`: a comment, not a reason


def test_sysinfo_lists_platform_names():
    res = trtx("sysinfo", "--match", "gpu=NVIDIA H100 80GB HBM3", "--match", "compute_capability=9.0",
               "--match", "product_name=DGXH100", "--platform", "H100_CI", "--match", "platform=H100_NIGHTLY")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["platforms"] == ["sm90", "H100_80GB_HBM3", "NVIDIA_H100_80GB_HBM3", "DGX_H100", "H100_CI",
                                 "H100_NIGHTLY"]
    assert info["gpu"] == "NVIDIA H100 80GB HBM3" and "platform" not in info


def _applying(*system):
    res = waive_list(*system)
    assert res.returncode == 0, res.stderr
    return {line.split(": ", 1)[1].split("/", 1)[0] for line in res.stdout.splitlines() if ": full:" in line}


@pytest.mark.parametrize("system,platforms", [
    (["--match", "gpu=H100 PCIe", "--match", "compute_capability=9.0"], {"full:H100_PCIe"}),
    (["--match", "gpu=NVIDIA B200", "--match", "compute_capability=10.0"],
     {"full:B200", "full:NVIDIA_B200", "full:sm100"}),
    (["--match", "gpu=NVIDIA RTX PRO 6000 Blackwell Server Edition", "--match", "compute_capability=12.0"],
     {"full:RTX_PRO_6000_Blackwell_Server_Edition"}),
    (["--match", "gpu=H100 80GB HBM3", "--match", "product_name=DGXH100"], {"full:DGX_H100"}),
    (["--match", "gpu=A10", "--platform", "RTXPro6000D", "--match", "platform=GH200"],
     {"full:A10", "full:RTXPro6000D", "full:GH200"}),
])
def test_platform_waives_match_whole_platform_names(system, platforms):
    assert _applying(*system) == platforms


def test_waive_list_says_which_platform_matched():
    res = waive_list("--all", "--match", "gpu=B200", "--match", "compute_capability=10.0")
    lines = res.stdout.splitlines()
    assert any(line.startswith("15: full:sm100/unittest/fx/bindings SKIP") and line.endswith("[platform sm100 matched]")
               for line in lines)
    assert any(line.startswith("8: full:H100/") and line.endswith("[no platform of this system is H100]")
               for line in lines)


def test_list_explain_says_which_platform_matched():
    res = forms("list", "l0_fx_dgx", "--explain", *B200x8)
    assert res.returncode == 0, res.stderr
    assert "# waives (" in res.stdout and "this system's platforms: sm100, B200, NVIDIA_B200" in res.stdout
    assert ("#   line 14: full:sm100/examples/test_fx_example.py::test_smoke[pp2] SKIP (megatron-core 0.8 is not "
            "supported in python 3.12): applies (platform sm100 matched full:sm100/)") in res.stdout
    assert ("#   line 2: accuracy/test_fx.py::TestModelB::test_nvfp4_8gpus[throughput] XFAIL "
            "(https://bugs.example/6029882): applies (no full:PLATFORM/)") in res.stdout


def test_a_folder_waive_waives_the_entry_that_is_the_folder_not_entries_inside_it(tmp_path):
    """As TensorRT-LLM applies them: `full:sm100/unittest/fx/tools` waives an entry that is that
    folder, not `unittest/fx/tools/test_tool_fx.py`, which runs on B200 (a real case:
    `full:sm100/unittest/trt/functional SKIP` and l0_b200's `unittest/trt/functional/test_fp4_gemm.py`)."""
    (tmp_path / "w.txt").write_text("full:sm100/unittest/fx/tools SKIP (Disable for Blackwell)\n"
                                    "full:sm100/unittest/fx/bindings/ SKIP (Disable for Blackwell)\n")
    args = ["--testdb", FORMS / "test-db", "--waives-file", tmp_path / "w.txt", "--markers"]
    dgx = trtx("list", "l0_fx_dgx", *B200x8, *args)
    assert dgx.returncode == 0 and "unittest/fx/tools/test_tool_fx.py" in dgx.stdout.splitlines(), dgx.stdout
    nanobind = trtx("list", "l0_fx_nanobind", "--match", "gpu=A10", "--platform", "sm100", *args)
    assert nanobind.stdout.splitlines() == ["unittest/fx/bindings  waived: SKIP (Disable for Blackwell)"]


def test_explain_lists_the_waives_around_an_entry(tmp_path):
    """--explain shows every waive `trtx run` would give an entry's tests: around it (its class,
    file) as well as its own, each with its verdict; not its folder's."""
    (tmp_path / "w.txt").write_text("accuracy/test_fx.py::TestModelB XFAIL (https://b/1)\n"
                                    "full:sm100/accuracy/test_fx.py SKIP (https://b/2)\n"
                                    "accuracy SKIP (https://b/3)\n")
    res = trtx("list", "l0_fx_dgx", "--explain", *B200x8, "--testdb", FORMS / "test-db",
               "--waives-file", tmp_path / "w.txt")
    lines = [line for line in res.stdout.splitlines() if line.startswith("#   line ")]
    assert lines == ["#   line 1: accuracy/test_fx.py::TestModelB XFAIL (https://b/1): applies (no full:PLATFORM/)",
                     "#   line 2: full:sm100/accuracy/test_fx.py SKIP (https://b/2): applies (platform sm100 matched "
                     "full:sm100/)"], res.stdout


def test_explain_says_when_no_platform_matched(tmp_path):
    (tmp_path / "w.txt").write_text("full:DGX_H100/examples/test_fx_example.py::test_smoke[pp2] SKIP (https://b/1)\n")
    res = trtx("list", "l0_fx_dgx", "--explain", *B200x8, "--testdb", FORMS / "test-db",
               "--waives-file", tmp_path / "w.txt")
    assert ("#   line 1: full:DGX_H100/examples/test_fx_example.py::test_smoke[pp2] SKIP (https://b/1): "
            "does not apply (no platform of this system is DGX_H100)") in res.stdout


@pytest.mark.parametrize("value,selected", [("True", True), ("true", True), ("TRUE", True), ("1", False),
                                            ("yes", False), ("False", False)])
def test_boolean_terms_from_match(value, selected):
    res = forms("list", "l0_fx_a10", "--match", f"supports_fp8={value}", "--match", "system_gpu_count=1")
    assert res.returncode == 0, res.stderr
    assert ("accuracy/test_fx.py::TestModelA::test_fp8_single[fp8kv=True]" in res.stdout) is selected


@pytest.mark.parametrize("cc,selected", [("9.0", True), ("8.9", True), ("8.6", False)])
def test_supports_fp8_follows_the_compute_capability(cc, selected):
    """TensorRT-LLM's lists name `supports_fp8: true`; trtx derives it from compute_capability."""
    res = forms("list", "l0_fx_a10", "--match", "system_gpu_count=1", "--match", f"compute_capability={cc}")
    assert res.returncode == 0, res.stderr
    assert ("accuracy/test_fx.py::TestModelA::test_fp8_single[fp8kv=True]" in res.stdout.splitlines()) is selected


def test_list_says_on_stderr_when_no_block_applies():
    res = forms("list", "l0_fx_dgx", "--match", "gpu=B200")     # no stage, no gpu count: nothing applies
    assert res.returncode == 0 and res.stdout == ""
    assert res.stderr == ("no test of l0_fx_dgx is selected for this system: `trtx list l0_fx_dgx --explain` shows "
                          "each block's checks\n")


def test_list_refuses_a_missing_waive_file_even_without_markers(tmp_path):
    res = trtx("list", "l0_fx_dgx", *B200x8, "--testdb", FORMS / "test-db", "--waives-file", tmp_path / "nope.txt")
    assert res.returncode == 2 and "waive file does not exist" in res.stderr and res.stdout == ""


def test_run_takes_platform(tmp_path):
    tree = tmp_path / "t"
    shutil.copytree(HERE / "fixture_tree", tree)
    (tree / "test-db" / "extra.yml").write_text("fx_platform:\n- tests:\n  - suite/test_basic.py::test_pass\n")
    (tree / "w.txt").write_text("full:CI_STAGE/suite/test_basic.py::test_pass SKIP (https://bugs.example/7)\n")
    outcomes = {}
    for name, extra in (("plain", []), ("stage", ["--platform", "CI_STAGE"])):
        res = trtx("run", "fx_platform", "--testdb", tree / "test-db", "--waives-file", tree / "w.txt", "--test-root",
                   tree / "tests", "--results", tmp_path / name, *extra, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        report = json.loads(trtx("report", tmp_path / name, "--format", "json").stdout)
        outcomes[name] = [t["outcome"] for t in report["tests"]]
    assert outcomes == {"plain": ["passed"], "stage": ["skipped"]}


@pytest.mark.parametrize("name,data,command,where", [
    ("test-db/bad.yml", b"ctx:\n- tests:\n  - a.py::t[caf\xe9]\n", "list", "bad.yml:3: not UTF-8 text (byte 0xe9)"),
    ("test-db/bad.yml", b"\x7fELF\x02\x01\x01\x00\x00", "list", "bad.yml:1: not a YAML text file"),
    ("waives.txt", b"a.py::t SKIP (https://b/1)\nb.py::t SKIP (caf\xe9)\n", "waive", "waives.txt:2: not UTF-8 text"),
])
def test_bad_bytes_are_one_line_naming_file_and_line(tmp_path, name, data, command, where):
    shutil.copytree(FORMS, tmp_path / "t")
    (tmp_path / "t" / name).write_bytes(data)
    args = (["list", "l0_fx_dgx", "--testdb", tmp_path / "t" / "test-db"] if command == "list" else ["waive", "list"])
    res = trtx(*args, "--waives-file", tmp_path / "t" / "waives.txt")
    assert res.returncode == 2, res.stderr
    assert where in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.parametrize("reason", ["", "   "])
def test_waive_add_refuses_an_empty_reason(tmp_path, reason):
    shutil.copy(FORMS / "waives.txt", tmp_path / "w.txt")
    res = trtx("waive", "add", "a.py::t", "--reason", reason, "--force", "--waives-file", tmp_path / "w.txt")
    assert res.returncode == 2 and "--reason" in res.stderr
    assert (tmp_path / "w.txt").read_bytes() == (FORMS / "waives.txt").read_bytes()


def test_waive_add_refuses_what_would_not_read_back(tmp_path):
    shutil.copy(FORMS / "waives.txt", tmp_path / "w.txt")
    res = trtx("waive", "add", "a.py::t[x#1]", "--reason", "https://b/1", "--force",
               "--waives-file", tmp_path / "w.txt")
    assert res.returncode == 2 and "cannot write" in res.stderr


def test_waive_list_of_an_empty_file_and_of_other_platforms(tmp_path):
    (tmp_path / "empty.txt").write_text("# nothing waived yet\n\n")
    res = trtx("waive", "list", "--waives-file", tmp_path / "empty.txt")
    assert res.returncode == 0 and res.stdout.strip() == f"no entries in {tmp_path / 'empty.txt'}"
    (tmp_path / "other.txt").write_text("full:B200/a.py::t SKIP (https://b/1)\nfull:sm100/b.py::t SKIP (https://b/2)\n")
    res = trtx("waive", "list", "--waives-file", tmp_path / "other.txt", "--match", "gpu=A10")
    assert res.returncode == 0
    assert res.stdout.startswith("no entries apply to this system: all 2 are for other platforms (this system's: A10,")


# --- waive edits: nothing but the edited entry changes ---

def _add(path, test_id="new/test_x.py::test_y[p]"):
    return trtx("waive", "add", test_id, "--reason", "https://bugs.example/9", "--force", "--waives-file", path)


def _remove(path, test_id="new/test_x.py::test_y[p]"):
    return trtx("waive", "remove", test_id, "--waives-file", path)


@pytest.mark.parametrize("ending,final", [(b"\r\n", True), (b"\r\n", False), (b"\n", False)])
def test_add_then_remove_gives_back_the_same_bytes(tmp_path, ending, final):
    lines = (FORMS / "waives.txt").read_bytes().splitlines()
    before = ending.join(lines) + (ending if final else b"")
    path = tmp_path / "w.txt"
    path.write_bytes(before)
    assert _add(path).returncode == 0
    new = b"new/test_x.py::test_y[p] SKIP (https://bugs.example/9)"
    assert path.read_bytes() == (before + new + ending if final else before + ending + new)
    assert _remove(path).returncode == 0
    assert path.read_bytes() == before


def test_remove_alone_keeps_crlf(tmp_path):
    path = tmp_path / "w.txt"
    path.write_bytes(b"# header\r\na.py::t SKIP (https://b/1)\r\nb.py::t SKIP (https://b/2)\r\n")
    assert _remove(path, "a.py::t").returncode == 0
    assert path.read_bytes() == b"# header\r\nb.py::t SKIP (https://b/2)\r\n"


def test_edits_go_through_a_link_keep_the_mode_and_leave_no_litter(tmp_path):
    real = tmp_path / "store" / "waives.txt"
    real.parent.mkdir()
    shutil.copy(FORMS / "waives.txt", real)
    os.chmod(real, 0o600)
    link = tmp_path / "tree" / "waives.txt"
    link.parent.mkdir()
    link.symlink_to(real)
    before = real.read_bytes()
    listing = sorted(p.name for p in tmp_path.rglob("*"))
    assert _add(link).returncode == 0
    assert link.is_symlink() and b"new/test_x.py" in real.read_bytes()
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert _remove(link).returncode == 0
    assert link.is_symlink() and real.read_bytes() == before
    assert sorted(p.name for p in tmp_path.rglob("*")) == listing          # no .lock, no temporary file


def test_concurrent_adds_lose_nothing(tmp_path):
    path = tmp_path / "w.txt"
    shutil.copy(FORMS / "waives.txt", path)
    ids = [f"new/test_x.py::test_{i}" for i in range(4)]
    with ThreadPoolExecutor(len(ids)) as pool:
        results = list(pool.map(lambda tid: _add(path, tid), ids))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    text = path.read_text()
    assert all(text.count(f"{tid} SKIP") == 1 for tid in ids)
