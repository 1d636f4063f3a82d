"""`trtx eval` through the real console script on the bundled model: on one rank, on tp x pp ranks
(mpirun: the tests marked multirank), and its one-line errors for bad input."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trtx.cli.eval.models import MODELS_DIR

TRTX = shutil.which("trtx", path=str(Path(sys.executable).parent))
BUNDLED = MODELS_DIR / "tiny-arith"
pytestmark = pytest.mark.timeout(600)


def trtx(*args, env=None):
    return subprocess.run([TRTX, *args], capture_output=True, text=True, timeout=600, env=env)


def test_eval_prints_accuracy_and_acceptance_and_writes_json(tmp_path):
    out = tmp_path / "eval.json"
    res = trtx("eval", "--mtp-nextn", "2", "--max-samples", "24", "--json", str(out), "--samples")
    assert res.returncode == 0, res.stderr
    assert "exact_match,last-answer" in res.stdout and "acceptance rate (nextn=2)" in res.stdout
    assert "tokens/s" in res.stdout
    data = json.loads(out.read_text())
    assert data["n"] == 24 and data["engine"]["mtp_nextn"] == 2 and len(data["samples"]) == 24
    assert data["task"] == "arith" and data["accuracy"] == data["metrics"]["exact_match,last-answer"]
    assert data["correct"] == sum(s["metrics"]["exact_match,last-answer"] for s in data["samples"])
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


@pytest.mark.multirank
def test_eval_on_four_ranks_reports_like_one_rank(tmp_path):
    out, logs = tmp_path / "eval.json", tmp_path / "logs"
    res = trtx("eval", "--tp", "2", "--pp", "2", "--mtp-nextn", "2", "--max-samples", "16", "--json", str(out),
               "--log-dir", str(logs))
    assert res.returncode == 0, res.stderr + res.stdout
    assert "(tp2 pp2)" in res.stdout and "acceptance rate (nextn=2)" in res.stdout
    data = json.loads(out.read_text())
    assert (data["engine"]["tensor_parallel_size"], data["engine"]["pipeline_parallel_size"], data["n"]) == (2, 2, 16) and data["spec"]["proposed"] > 0
    assert [(r["rank"], r["tp_rank"], r["pp_rank"]) for r in data["ranks"]] == [(0, 0, 0), (1, 1, 0), (2, 0, 1), (3, 1, 1)]
    assert sorted(p.name for p in logs.glob("rank-*.log")) == [f"rank-{r}.log" for r in range(4)]


@pytest.mark.multirank
def test_eval_on_ranks_fails_with_the_failing_ranks_error(tmp_path):
    tmp = dict(os.environ, TMPDIR=str(tmp_path))
    res = trtx("eval", "--tp", "3", "--max-samples", "4", env=tmp)
    assert res.returncode == 2 and "tp size 3" in res.stderr and "Traceback" not in res.stderr
    assert not list(tmp_path.glob("trtx-eval-*")), "a refused split needs no log folder"
    res = trtx("eval", "--pp", "2", "--mtp-nextn", "1", "--max-samples", "4",
               env=dict(tmp, TRTX_FAULTS="drop_mtp_on_last_stage"))
    report = " ".join(res.stderr.split())          # rich wraps long lines
    assert res.returncode == 1 and "rank 1 failed" in report and "holds no MTP module weights" in report
    kept = list(tmp_path.glob("trtx-eval-*"))      # a failed job keeps its logs, and says where
    assert len(kept) == 1 and (kept[0] / "rank-1.log").exists() and f"logs in {kept[0]}" in res.stderr


@pytest.mark.multirank
def test_eval_on_ranks_removes_its_temporary_logs_when_it_succeeds(tmp_path):
    res = trtx("eval", "--tp", "2", "--max-samples", "4", env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert res.returncode == 0, res.stderr + res.stdout
    assert "exact_match" in res.stdout and not list(tmp_path.glob("trtx-eval-*"))


BAD_ROWS = {   # eval set -> (line, what the error says); blank lines count
    '{"prompt": "1+1=", "answer": 2}\n\n{"prompt": "2+2=", "answer": "four"}\n':
        (3, "'answer' must be an integer, got 'four'"),
    '{"prompt": "1+1=", "answer": 2}\n \n\n{"prompt": "5/2=", "answer": 2.5}\n':
        (4, "'answer' must be an integer, got 2.5"),
    '{"prompt": "1+1=", "answer": 2}\n{"prompt": "2+2="}\n': (2, "no 'answer' field"),
    '{"prompt": ["1+1="], "answer": 2}\n': (1, "'prompt' must be a string"),
    '{"prompt": "1+1=", "answer": 2}\n{"prompt": "2+2=", \n': (2, "invalid JSON"),
}


@pytest.mark.parametrize("text", BAD_ROWS, ids=["word", "float-after-blank-lines", "no-answer", "list-prompt", "json"])
def test_bad_eval_row_is_one_line_naming_file_and_line(tmp_path, text):
    line, what = BAD_ROWS[text]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(text)
    res = trtx("eval", "--dataset", str(bad))
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(f"Error: {bad}:{line}: {what}") and res.stderr.count("\n") == 1, res.stderr


def test_bad_eval_row_on_ranks_is_refused_before_any_rank_starts(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1+1=", "answer": 2}\n\n{"prompt": "2+2=", "answer": "four"}\n')
    res = trtx("eval", "--dataset", str(bad), "--tp", "2", env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert res.returncode == 2 and res.stderr == f"Error: {bad}:3: 'answer' must be an integer, got 'four'\n"
    assert not list(tmp_path.glob("trtx-eval-*"))


def test_engine_config_error_is_one_line(tmp_path):
    """A checkpoint without an MTP module asked to draft: the engine's ConfigError, exit 2."""
    model = tmp_path / "no-mtp"
    model.mkdir()
    for f in BUNDLED.iterdir():
        if f.name != "config.json":
            (model / f.name).symlink_to(f)
    config = json.loads((BUNDLED / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(dict(config, num_nextn_predict_layers=0)))
    res = trtx("eval", "--model", str(model), "--mtp-nextn", "1", "--max-samples", "2")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "needs a checkpoint with one MTP module" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_a_non_utf8_eval_set_names_the_line_and_samples_needs_json(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prompt": "1+1=", "answer": 2}\n{"prompt": "caf\xe9", "answer": 2}\n')
    res = trtx("eval", "--dataset", str(bad))
    assert res.returncode == 2 and res.stderr == f"Error: {bad}:2: not UTF-8 text (byte 0xe9); is this a binary file?\n"
    res = trtx("eval", "--samples")
    assert res.returncode == 2 and res.stderr.startswith("Error: --samples") and res.stderr.count("\n") == 1
