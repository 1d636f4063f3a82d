"""`trtx eval --lm-eval TASK`: an lm-evaluation-harness task run on the bundled engine through
trtx's lm-eval model (lm_eval_model.TrtxLM), its metrics returned as an EvalResult so that they
are reported, written and gated like a task file's. Besides lm-eval's own tasks and those of
--include-path, two local tasks over the bundled data run offline: arith_lm and arith_choice_lm. Needs the optional extra (`pip install
trtx[lm-eval]`); imported only when asked for.

lm-eval reports proportions (acc, acc_norm, exact_match, ...) on a 0-1 scale: they are given here
on trtx's 0-100 scale; its other metrics (perplexities, ...) as lm-eval gives them. Metric names
keep lm-eval's "<metric>,<filter>" form: exact_match,strict-match.
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from ..bundled import MODELS_DIR
from ..errors import UserError, closest
from .evaluate import Chat, EvalResult
from .gate import PROPORTIONS


# lm-eval tasks over the bundled model's data, so that lm-eval runs out of the box, offline: arith_lm
# grades as the arith task file, arith_choice_lm scores as arith-choice. lm-eval reads a local
# file by an absolute path only, so they are written out where they are used (write_bundled_tasks).
BUNDLED_TASKS = {
    "arith_lm": """\
task: arith_lm
dataset_path: json
dataset_kwargs: {{data_files: {{test: {arith}}}}}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs: {{until: ["\\n"], max_gen_toks: 96, do_sample: false}}
filter_list:
  - name: last-answer
    filter:
      - {{function: regex, regex_pattern: "Answer:\\\\s*(-?\\\\d+)", group_select: -1}}
      - {{function: take_first}}
metric_list:
  - {{metric: exact_match, aggregation: mean, higher_is_better: true}}
""",
    "arith_choice_lm": """\
task: arith_choice_lm
dataset_path: json
dataset_kwargs: {{data_files: {{test: {choice}}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
target_delimiter: ""
metric_list: [{{metric: acc, aggregation: mean, higher_is_better: true}},
              {{metric: acc_norm, aggregation: mean, higher_is_better: true}}]
""",
}


def write_bundled_tasks(folder: Path) -> Path:
    """The bundled lm-eval tasks as YAML files in `folder` (an lm-eval include path)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in BUNDLED_TASKS.items():
        model = MODELS_DIR / "tiny-arith"
        paths = {"arith": model / "eval.jsonl", "choice": model / "tasks" / "arith-choice.jsonl"}
        (folder / f"{name}.yaml").write_text(text.format(**{k: json.dumps(str(p)) for k, p in paths.items()}))
    return folder


def evaluate_lm_eval(config, task_name: str, max_samples: int | None = None, *, include_path: str | None = None,
                     chat: Chat | None = None, timeout_s: float = 1800, log_dir: Path | None = None) -> EvalResult:
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError("--lm-eval needs lm-evaluation-harness: pip install 'trtx[lm-eval]'") from None
    from trtx.engine.speculative import SpecStats

    from .lm_eval_model import TrtxLM

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="trtx-lm-eval-") as bundled:
        manager = TaskManager(include_path=[write_bundled_tasks(Path(bundled))] + ([include_path] if include_path else []))
        if task_name not in manager.all_tasks:
            raise UserError(f"--lm-eval {task_name!r}: lm-eval knows no such task"
                            f"{closest(task_name, manager.all_tasks)}; trtx brings {', '.join(BUNDLED_TASKS)}"
                            + ("" if include_path else "; your own task files: --include-path DIR"))
        lm = TrtxLM.from_config(config, timeout_s, log_dir)
        try:
            out = lm_eval.simple_evaluate(model=lm, tasks=[task_name], task_manager=manager, limit=max_samples,
                                          apply_chat_template=chat is not None,
                                          system_instruction=chat.system if chat else None,
                                          bootstrap_iters=0, log_samples=False, verbosity="WARNING")
        finally:
            lm.engine.close()
    results = out["results"][task_name]
    metrics = {}
    for key, value in results.items():
        metric = key.split(",")[0]
        if "," not in key or "_stderr" in metric or not isinstance(value, (int, float)):
            continue          # alias, sample_len, standard errors: no metric of the task
        metrics[key] = 100.0 * value if metric in PROPORTIONS else float(value)
    if not metrics:
        raise UserError(f"--lm-eval {task_name!r}: the task reported no metric (a group? name one of its tasks)")
    n = int(out["n-samples"][task_name]["effective"])
    primary, value = next(iter(metrics.items()))
    generated = [c for c in lm.calls if c.outputs and "token_ids" in c.outputs[0]]
    tokens = sum(len(o["token_ids"]) for c in generated for o in c.outputs)
    scored = sum(len(o["logprobs"]) for c in lm.calls for o in c.outputs if "logprobs" in o)
    seconds = sum(c.seconds for c in lm.calls)
    specs = [SpecStats.from_dict(c.spec) for c in generated if c.spec]
    return EvalResult(
        model=config.model, task=task_name, dataset=f"lm-eval:{task_name}", engine=config.as_dict(), n=n,
        metrics=metrics, accuracy=value,
        correct=round(value * n / 100) if primary.split(",")[0] in PROPORTIONS else 0,
        generated_tokens=tokens, seconds=seconds,
        tokens_per_s=(tokens or scored) / seconds if seconds else 0.0,
        steps=sum(c.steps for c in lm.calls), spec=SpecStats.total(specs).as_dict() if specs else None,
        ranks=lm.calls[-1].ranks if lm.calls else [], chat_template=chat is not None)
