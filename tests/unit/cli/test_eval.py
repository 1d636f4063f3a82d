"""`trtx eval` through the real console script on the bundled model."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TRTX = shutil.which("trtx", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.timeout(600)


def trtx(*args):
    return subprocess.run([TRTX, *args], capture_output=True, text=True, timeout=600)


def test_eval_prints_accuracy_and_acceptance_and_writes_json(tmp_path):
    out = tmp_path / "eval.json"
    res = trtx("eval", "--mtp-nextn", "2", "--max-samples", "24", "--json", str(out), "--samples")
    assert res.returncode == 0, res.stderr
    assert "accuracy" in res.stdout and "acceptance rate (nextn=2)" in res.stdout and "tokens/s" in res.stdout
    data = json.loads(out.read_text())
    assert data["n"] == 24 and data["mtp_nextn"] == 2 and len(data["samples"]) == 24
    assert data["correct"] == sum(s["correct"] for s in data["samples"])
    spec = data["spec"]
    assert spec["proposed"] > 0 and spec["acceptance_rate"] == spec["accepted"] / spec["proposed"]
    assert spec["mean_acceptance_length"] == 1 + spec["accepted"] / spec["verify_steps"]


def test_eval_bad_input_is_one_line_and_exit_2(tmp_path):
    res = trtx("eval", "--model", "tiny-arth")
    assert res.returncode == 2 and "did you mean: tiny-arith" in res.stderr and "Traceback" not in res.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1", "answer": 2}\n')
    res = trtx("eval", "--dataset", str(bad))
    assert res.returncode == 2 and str(bad) in res.stderr and "'prompt'" in res.stderr
    res = trtx("eval", "--model", str(tmp_path / "nowhere"))
    assert res.returncode == 2 and "neither a checkpoint directory" in res.stderr


def test_eval_on_four_ranks_reports_like_one_rank(tmp_path):
    out, logs = tmp_path / "eval.json", tmp_path / "logs"
    res = trtx("eval", "--tp", "2", "--pp", "2", "--mtp-nextn", "2", "--max-samples", "16", "--json", str(out),
               "--log-dir", str(logs))
    assert res.returncode == 0, res.stderr + res.stdout
    assert "(tp2 pp2)" in res.stdout and "acceptance rate (nextn=2)" in res.stdout
    data = json.loads(out.read_text())
    assert (data["tp"], data["pp"], data["n"]) == (2, 2, 16) and data["spec"]["proposed"] > 0
    assert [(r["rank"], r["tp_rank"], r["pp_rank"]) for r in data["ranks"]] == [(0, 0, 0), (1, 1, 0), (2, 0, 1), (3, 1, 1)]
    assert sorted(p.name for p in logs.glob("rank-*.log")) == [f"rank-{r}.log" for r in range(4)]


def test_eval_on_ranks_fails_with_the_failing_ranks_error(tmp_path):
    res = trtx("eval", "--tp", "3", "--max-samples", "4")
    assert res.returncode == 2 and "tp size 3" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([TRTX, "eval", "--pp", "2", "--mtp-nextn", "1", "--max-samples", "4"], capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, TRTX_FAULTS="drop_mtp_on_last_stage"))
    report = " ".join(res.stderr.split())          # rich wraps long lines
    assert res.returncode == 1 and "rank 1 failed" in report and "holds no MTP module weights" in report
