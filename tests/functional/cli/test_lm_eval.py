"""lm-evaluation-harness on the bundled engine, offline, through the real console script: the
bundled local lm-eval tasks (YAML over the bundled JSONL files) give the metrics trtx's own task
files give on the same documents, through `trtx eval --lm-eval` (gated like a task file's) and through
`trtx lm-eval`, lm-eval's own command line with the model registered, on pipeline ranks too."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from trtx.cli.eval.evaluate import evaluate  # noqa: E402
from trtx.cli.eval.lm_eval_task import write_bundled_tasks  # noqa: E402
from trtx.cli.eval.models import MODELS_DIR  # noqa: E402
from trtx.engine.engine_config import EngineConfig  # noqa: E402

TRTX = shutil.which("trtx", path=str(Path(sys.executable).parent))
MODEL = MODELS_DIR / "tiny-arith"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """The bundled lm-eval tasks as files, for `trtx lm-eval --include_path` (`trtx eval --lm-eval`
    finds them itself)."""
    return write_bundled_tasks(tmp_path_factory.mktemp("lm-eval-tasks"))


def trtx(*args, tmp_path):
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TMPDIR=str(tmp_path))
    return subprocess.run([TRTX, *args], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)


def test_trtx_eval_runs_an_lm_eval_task_like_the_task_file(tmp_path, tasks):
    out = tmp_path / "eval.json"
    res = trtx("eval", "--lm-eval", "arith_lm", "--max-samples", "40", "--mtp-nextn", "2", "--json", str(out),
               tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(out.read_text())
    native = evaluate(EngineConfig(MODEL, mtp_nextn=2), MODEL / "tasks" / "arith.yaml", 40)
    assert data["n"] == 40 and data["task"] == "arith_lm"
    assert data["metrics"] == {"exact_match,last-answer": native.metrics["exact_match,last-answer"]}
    assert data["spec"]["proposed"] > 0 and data["spec"]["acceptance_rate"] == pytest.approx(
        native.spec["acceptance_rate"], abs=1e-9)
    (tmp_path / "mine").mkdir()                                     # the user's own (empty) task folder
    res = trtx("eval", "--lm-eval", "arith_lmm", "--include-path", str(tmp_path / "mine"), tmp_path=tmp_path)
    assert res.returncode == 2 and "lm-eval knows no such task (did you mean: arith_lm" in res.stderr
    assert res.stderr.count("\n") == 1


@pytest.mark.multirank
def test_trtx_lm_eval_is_lm_evals_command_with_the_model_on_pipeline_ranks(tmp_path, tasks):
    res = trtx("lm-eval", "run", "--model", "trtx", "--model_args", "pretrained=tiny-arith,pp=2",
               "--tasks", "arith_choice_lm", "--include_path", str(tasks), "--limit", "24",
               "--output_path", str(tmp_path / "out"), tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]["arith_choice_lm"]
    native = evaluate(EngineConfig(MODEL), MODEL / "tasks" / "arith-choice.yaml", 24)
    assert 100 * results["acc,none"] == pytest.approx(native.metrics["acc"])
    assert not list(tmp_path.glob("trtx-eval-*")), "each job's temporary logs are removed"
