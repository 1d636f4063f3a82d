"""`trtx eval` and cli/eval/evaluate.py in this process, before anything starts: only the engine's
ConfigError loses its traceback, and a split the model cannot take is refused before any rank starts."""
import traceback

import pytest
from click.testing import CliRunner

from trtx.cli import cmd_eval
from trtx.cli.eval.evaluate import evaluate
from trtx.cli.eval.models import MODELS_DIR
from trtx.cli.main import cli
from trtx.engine import LLM
from trtx.engine.engine_config import EngineConfig
from trtx.engine.errors import ConfigError

MODEL = MODELS_DIR / "tiny-arith"
TASK = MODEL / "tasks" / "arith.yaml"
pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize("error,exit_code", [(ConfigError("tp size 3 does not fit"), 2),
                                             (ValueError("a planted bug"), 1)])
def test_only_config_errors_lose_their_traceback(monkeypatch, error, exit_code):
    """cmd_eval turns the engine's ConfigError into one line; any other ValueError is a bug and
    propagates with its traceback."""
    def evaluate(*args, **kwargs):
        raise error
    monkeypatch.setattr(cmd_eval, "evaluate", evaluate)
    res = CliRunner().invoke(cli, ["eval", "--max-samples", "1"])
    assert res.exit_code == exit_code
    if exit_code == 2:
        assert res.stderr == f"Error: {error}\n"
    else:
        assert res.exception is error       # with its own traceback, down to where it was raised
        assert traceback.extract_tb(res.exc_info[2])[-1].name == "evaluate"


def test_a_bad_split_is_refused_before_any_rank_starts(tmp_path):
    with pytest.raises(ValueError, match="tp size 3"):
        evaluate(EngineConfig(MODEL, tensor_parallel_size=3), TASK, timeout_s=60, log_dir=tmp_path)
    assert not (tmp_path / "launcher.log").exists()
    with pytest.raises(ValueError, match="needs 4 ranks, but this job has 1"):
        LLM(MODEL, tensor_parallel_size=2, pipeline_parallel_size=2)


def test_what_cannot_run_is_refused_before_the_engine_loads(tmp_path, monkeypatch):
    """A prompt longer than the model, a multiple-choice row whose choice adds no token, --json
    into a missing folder, --samples with --lm-eval: one line each, exit 2, nothing loaded."""
    monkeypatch.setattr(cmd_eval, "evaluate", evaluate)          # the real one, but no engine may load
    monkeypatch.setattr(LLM, "from_config", lambda config: pytest.fail("the engine was loaded"))
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "1+1=", "answer": 2}\n' + '{"prompt": "%s", "answer": 2}\n' % ("x" * 300))
    res = CliRunner().invoke(cli, ["eval", "--dataset", str(rows)])
    assert res.exit_code == 2
    assert res.stderr == (f"Error: {rows}:2: 300 tokens, but the model takes at most 255 "
                          f"(max_position_embeddings 256, one left to generate)\n")
    task = tmp_path / "mc.yaml"
    task.write_text("task: mc\ndataset: {path: mc.jsonl}\nprompt: '{{ q }}'\n"
                    "multiple_choice: {choices: c, target: g, continuation: '{{ choice }}'}\n")
    (tmp_path / "mc.jsonl").write_text('{"q": "1+1=", "c": ["2", "3"], "g": 0}\n')
    monkeypatch.setattr("trtx.engine.tokenizer.Tokenizer.encode", lambda self, text, add_special_tokens=True:
                        [5] * len(text.rstrip("3")))            # choice "3" adds no token after the prompt
    res = CliRunner().invoke(cli, ["eval", "--task", str(task)])
    assert res.exit_code == 2 and res.stderr == f"Error: {tmp_path / 'mc.jsonl'}:1: choice 1 adds no token after the prompt ('3')\n"
    res = CliRunner().invoke(cli, ["eval", "--json", str(tmp_path / "nowhere" / "x.json")])
    assert res.exit_code == 2 and res.stderr.startswith("Error: --json") and "no folder" in res.stderr
    res = CliRunner().invoke(cli, ["eval", "--lm-eval", "arith_lm", "--json", str(tmp_path / "x.json"), "--samples"])
    assert res.exit_code == 2 and res.stderr.startswith("Error: --samples lists a task file's documents")
