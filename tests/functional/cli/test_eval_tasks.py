"""`trtx eval` with task files through the real console script: the path a user takes with a real
checkpoint (a random one laid out like a Llama 3 instruct release: tokenizer.json, a chat
template in tokenizer_config.json, two eos ids) and the GSM8K task file of docs/tasks, on two
ranks with the chat template; the bundled multiple-choice task; and bad task files, one line each."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.checkpoints import make_release_checkpoint

TRTX = shutil.which("trtx", path=str(Path(sys.executable).parent))
REPO = Path(__file__).parents[3]
pytestmark = pytest.mark.timeout(600)


def trtx(*args, env=None, cwd=None):
    return subprocess.run([TRTX, *args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


def gsm8k_like(folder: Path) -> Path:
    """docs/tasks/gsm8k.yaml beside a tiny data set in GSM8K's form (question, answer ending in
    "#### N"), short enough for a 512-position model with 5 examples."""
    data = folder / "gsm8k"
    data.mkdir(parents=True)
    for split, n in (("train", 6), ("test", 4)):
        rows = [{"question": f"{i}+{i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}"} for i in range(n)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = folder / "gsm8k.yaml"
    shutil.copy(REPO / "docs" / "tasks" / "gsm8k.yaml", task)
    return task


@pytest.mark.multirank
def test_a_release_checkpoint_runs_the_gsm8k_task_file_on_two_ranks_with_its_chat_template(tmp_path):
    model = make_release_checkpoint(tmp_path / "llama3-random")
    task = gsm8k_like(tmp_path / "task")
    out = tmp_path / "eval.json"
    res = trtx("eval", "--model", str(model), "--task", str(task), "--tp", "2", "--apply-chat-template",
               "--system-prompt", "Be brief.", "--json", str(out), "--samples",
               env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert res.returncode == 0, res.stderr + res.stdout
    assert "exact_match,strict-match" in res.stdout and "exact_match,flexible-extract" in res.stdout
    data = json.loads(out.read_text())
    assert data["task"] == "gsm8k" and data["n"] == 4 and data["chat_template"] is True
    assert set(data["metrics"]) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    assert [r["tp_rank"] for r in data["ranks"]] == [0, 1]
    first = data["samples"][0]
    assert first["prompt"].count("Question:") == 6 and first["target"] == "0"     # 5 examples, then the doc
    assert all(len(s["token_ids"]) <= 256 for s in data["samples"])
    assert not list(tmp_path.glob("trtx-eval-*")), "the job's temporary logs are removed when it succeeds"


def test_the_multiple_choice_task_reports_acc_and_acc_norm(tmp_path):
    out = tmp_path / "eval.json"
    res = trtx("eval", "--task", "arith-choice", "--max-samples", "20", "--json", str(out), "--samples")
    assert res.returncode == 0, res.stderr
    assert "acc_norm" in res.stdout and "tokens/s (scored)" in res.stdout
    data = json.loads(out.read_text())
    assert list(data["metrics"]) == ["acc", "acc_norm", "exact_match"] and data["accuracy"] == data["metrics"]["acc"]
    sample = data["samples"][0]
    assert len(sample["logprobs"]) == len(sample["choices"]) == 4 and 0 <= sample["gold"] < 4
    best = max(range(4), key=sample["logprobs"].__getitem__)
    assert sample["metrics"]["acc"] == float(best == sample["gold"])


BAD_TASKS = {   # task file -> what the one-line error says, after "FILE:LINE: "
    "task: t\nprompt: '{{ q }}'\ndataset: {path: d.jsonl}\ngenerate: {target: x, max_token: 5}\n":
        (4, "unknown key 'max_token'"),
    "task: t\nprompt: '{{ q '\ndataset: {path: d.jsonl}\ngenerate: {target: x}\n": (2, "prompt"),
    "task: t\nprompt: '{{ q }}'\ndataset: {path: d.jsonl}\n": (1, "generate"),
    "task: t\nprompt: '{{ r }}'\ndataset: {path: d.jsonl}\ngenerate: {target: x}\n": (None, "'r'"),
    "task: t\nprompt: '{{ q }}'\ndataset: {path: d.jsonl}\nmultiple_choice: {choices: c, target: g}\n":
        (None, "outside the 2 choices"),
}


@pytest.mark.parametrize("text", BAD_TASKS, ids=["unknown-key", "template-syntax", "no-kind", "missing-field",
                                                 "choice-index"])
def test_a_bad_task_file_is_one_line_naming_the_file_and_line(tmp_path, text):
    line, what = BAD_TASKS[text]
    (tmp_path / "d.jsonl").write_text('{"q": "1+1=", "c": ["1", "2"], "g": 2}\n')
    task = tmp_path / "t.yaml"
    task.write_text(text)
    res = trtx("eval", "--task", str(task))
    where = f"{task}:{line}: " if line else f"{tmp_path / 'd.jsonl'}:1: "
    assert res.returncode == 2 and res.stderr.startswith(f"Error: {where}"), res.stderr
    assert what in res.stderr and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
