"""The shipped test lists and the product's main job, as a user runs them: which tests each list
selects, an engine fault turning its test red with the reason, and waiving it."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trtx.cli.run.results import RESULTS_FILE, read_events

TRTX = shutil.which("trtx", path=str(Path(sys.executable).parent))
REPO = Path(__file__).parents[3]
REGRESSIONS = "accuracy/test_tiny_arith.py::TestProductionRegressions::"
REGRESSION = REGRESSIONS + "test_mtp_layers_kept_on_last_pp_stage_pp4"
pytestmark = pytest.mark.timeout(600)


def trtx(*args, env=None):
    return subprocess.run([TRTX, *args], capture_output=True, text=True, timeout=600, cwd=REPO,
                          env=dict(os.environ, **(env or {})))


def test_l0_cpu_selects_the_main_configurations_and_the_regressions():
    res = trtx("list", "l0_cpu")
    assert res.returncode == 0, res.stderr
    ids = res.stdout.split()
    assert len(ids) == 14 and sum("TestProductionRegressions" in i for i in ids) == 5
    assert "accuracy/test_tiny_arith.py::TestTinyArith::test_accuracy[pp2-mtp_nextn=2]" in ids
    assert sum("TestTinyArithChoice" in i for i in ids) == 3            # multiple choice: 1 rank, pp2, adp2


def test_l0_dgx_b200_post_merge_on_8_gpus_selects_its_8_rank_tests():
    res = trtx("list", "l0_dgx_b200", "--match", "gpu=B200", "--match", "system_gpu_count=8",
               "--match", "stage=post_merge")
    assert res.returncode == 0, res.stderr
    assert [i.split("[")[1].split("-")[0] for i in res.stdout.split()] == ["adp8", "tp2pp4", "tp4pp2", "tp4pp2"]
    assert trtx("list", "l0_dgx_b200").stdout.strip() == ""        # no B200 here, no stage given


def test_every_listed_test_exists_and_the_waive_file_is_clean():
    assert trtx("waive", "check").returncode == 0
    for ctx in ("l0_cpu", "l0_a10", "l0_dgx_h100", "l0_dgx_b200"):
        res = trtx("list", ctx, "--explain")
        assert res.returncode == 0 and "unknown" not in res.stdout.lower(), res.stdout + res.stderr


def finished(results_dir) -> list[dict]:
    return [e for e in read_events(results_dir / RESULTS_FILE) if e["event"] == "finish"]


def run_regression(tmp_path, name, waives):
    results = tmp_path / name
    res = trtx("run", "l0_cpu", "-k", "test_mtp_layers_kept_on_last_pp_stage_pp4", "--results", str(results),
               "--waives-file", str(waives), env={"TRTX_FAULTS": "drop_mtp_on_last_stage"})
    return res, finished(results)


@pytest.mark.multirank
def test_an_engine_fault_turns_its_test_red_and_a_waive_turns_the_run_green(tmp_path):
    waives = tmp_path / "waives.txt"
    shutil.copy(REPO / "waives" / "waives.txt", waives)
    res, finish = run_regression(tmp_path, "red", waives)
    assert res.returncode == 1 and [e["outcome"] for e in finish] == ["failed"]
    assert "holds no MTP module weights" in finish[0]["message"]
    add = trtx("waive", "add", REGRESSION, "--reason", "https://bugs.example/5916092", "--waives-file", str(waives))
    assert add.returncode == 0, add.stderr
    res, finish = run_regression(tmp_path, "waived", waives)
    assert res.returncode == 0 and [e["outcome"] for e in finish] == ["skipped"]
    assert "waived" in finish[0]["message"] and "waived" in res.stdout
    assert trtx("waive", "remove", REGRESSION, "--waives-file", str(waives)).returncode == 0
    res, finish = run_regression(tmp_path, "back", waives)
    assert res.returncode == 1 and [e["outcome"] for e in finish] == ["failed"]


@pytest.mark.multirank
def test_a_desynchronised_gather_turns_the_attention_dp_regression_red(tmp_path):
    results = tmp_path / "results"
    res = trtx("run", "l0_cpu", "-k", "test_adp_dry_rank_with_all_rank_stats_joins_every_collective",
               "--results", str(results), env={"TRTX_FAULTS": "gather_when_finished"})
    finish = finished(results)
    assert res.returncode == 1 and [e["outcome"] for e in finish] == ["failed"]
    assert "CollectiveDesync" in finish[0]["message"] and "attention_dp.py" in finish[0]["message"]
