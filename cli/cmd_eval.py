"""`trtx eval`: every metric of one task, MTP acceptance and speed, for one engine configuration."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .errors import UserError
from .eval.engines import RankJobError
from .eval.evaluate import Chat, evaluate
from .eval.models import resolve_model, resolve_task
from .eval.taskfile import load_task
from .fsutil import atomic_write
from .options import engine_options, timeout_option


@click.command("eval")
@click.option("--model", "model", default="tiny-arith", show_default=True,
              help="A checkpoint directory (config.json, *.safetensors, tokenizer.json) or a bundled model's name.")
@click.option("--task", "task_name", metavar="FILE|NAME",
              help="A task file (docs/tasks.md), or the name of one in the model's tasks/ folder or a bundled "
                   "model's (arith, arith-choice). Default: the model's first task file (tiny-arith: arith).")
@click.option("--dataset", type=click.Path(exists=True, dir_okay=False),
              help="Evaluate this data file instead of the task's (same fields).")
@click.option("--lm-eval", "lm_eval_task", metavar="TASK",
              help="Run this lm-evaluation-harness task instead of a task file (needs `pip install trtx[lm-eval]`).")
@click.option("--include-path", type=click.Path(exists=True, file_okay=False),
              help="With --lm-eval: a folder of your own lm-eval task YAML files.")
@click.option("--apply-chat-template", is_flag=True,
              help="Render each prompt with the checkpoint's chat template (as one user message).")
@click.option("--system-prompt", help="With --apply-chat-template: a system message before each prompt.")
@engine_options
@click.option("--max-samples", type=click.IntRange(min=1), help="Evaluate only the first M documents.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the results as JSON here.")
@click.option("--samples", is_flag=True, help="With --json: include every prompt, output and score.")
@timeout_option("30m", "s", "With tp x pp > 1: how long before a job counts as hung (every rank's stack is reported)")
@click.option("--log-dir", type=click.Path(file_okay=False),
              help="With tp x pp > 1: per-rank logs (default: a temporary folder, removed when the job succeeds).")
def eval_cmd(model, task_name, dataset, lm_eval_task, include_path, apply_chat_template, system_prompt, max_samples,
             json_out, samples, timeout_s, log_dir, **engine):
    """Evaluate one engine configuration on a task and report every metric of the task (with n),
    MTP acceptance (rate, mean acceptance length, per-position rates) and tokens/s.

    A task file (docs/tasks.md) is either generation, greedy, graded by its answer filters
    (exact_match,<filter>), or multiple choice, scored by each choice's log-likelihood (acc,
    acc_norm). --lm-eval runs an lm-evaluation-harness task on the same engine instead.

    With --tp/--pp the engine runs on tp x pp ranks (one process each, under mpirun), every
    rank holding its share of the model; a failing or hung rank is reported with its stack."""
    from rich.console import Console

    from trtx.engine.engine_config import EngineConfig
    from trtx.engine.errors import ConfigError

    if samples and not json_out:
        raise UserError("--samples adds every sample to the --json file: give --json FILE with it")
    if system_prompt is not None and not apply_chat_template:
        raise UserError("--system-prompt goes into the chat template: give --apply-chat-template with it")
    if lm_eval_task and (task_name or dataset):
        raise UserError("--lm-eval runs an lm-eval task: it takes neither --task nor --dataset")
    if lm_eval_task and samples:
        raise UserError("--samples lists a task file's documents; with --lm-eval, lm-eval's own `trtx lm-eval "
                        "... --log_samples` writes them")
    if json_out and not Path(json_out).resolve().parent.is_dir():
        raise UserError(f"--json {json_out}: no folder {Path(json_out).resolve().parent} to write it in")
    if include_path and not lm_eval_task:
        raise UserError("--include-path is where --lm-eval finds your task files: give --lm-eval TASK with it")
    model_dir = resolve_model(model)
    chat = Chat(system_prompt) if apply_chat_template else None
    task = None if lm_eval_task else load_task(resolve_task(task_name, model_dir))
    console = Console(highlight=False, stderr=True)
    try:
        config = EngineConfig(str(model_dir), **engine)     # every engine option checked here, once
        where = f"{_layout(config)}, " if config.world_size > 1 else ""
        name = lm_eval_task or task.name
        with console.status(f"evaluating {model} on {name} ({where}mtp_nextn={config.mtp_nextn})"):
            if lm_eval_task:
                from .eval.lm_eval_task import evaluate_lm_eval
                result = evaluate_lm_eval(config, lm_eval_task, max_samples, include_path=include_path, chat=chat,
                                          timeout_s=timeout_s, log_dir=Path(log_dir) if log_dir else None)
            else:
                result = evaluate(config, task, max_samples, data_path=Path(dataset) if dataset else None, chat=chat,
                                  timeout_s=timeout_s, log_dir=Path(log_dir) if log_dir else None)
    except ConfigError as e:         # the user's configuration (e.g. no MTP module); any other error is a bug
        raise UserError(str(e)) from None
    except RankJobError as e:
        from .launch.report import print_report
        print_report(e.launch, console)
        raise SystemExit(e.launch.exit_code) from None
    Console(highlight=False).print(_table(model, result, config))
    if json_out:
        atomic_write(Path(json_out), json.dumps(result.as_dict(with_samples=samples), indent=2) + "\n")


def _layout(config) -> str:
    return f"{'adp' if config.attention_dp else 'tp'}{config.tensor_parallel_size} pp{config.pipeline_parallel_size}"


def _table(model: str, result, config):
    from rich.table import Table

    where = f" ({_layout(config)})" if config.world_size > 1 else ""
    table = Table(title=f"trtx eval: {model} on {result.task}{where}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for i, (name, value) in enumerate(result.metrics.items()):
        count = f" ({result.correct}/{result.n})" if i == 0 and result.correct is not None else f" (n={result.n})"
        table.add_row(name, f"{value:.1f}{count}")
    if result.spec:
        s = result.spec
        table.add_row(f"acceptance rate (nextn={config.mtp_nextn})",
                      f"{s['acceptance_rate']:.3f} ({s['accepted']}/{s['proposed']})")
        table.add_row("mean acceptance length", f"{s['mean_acceptance_length']:.2f}")
        table.add_row("per-position acceptance", " ".join(f"{r:.2f}" for r in s["position_rates"]))
    what = "generated" if result.generated_tokens else "scored"
    tokens = round(result.tokens_per_s * result.seconds)
    table.add_row(f"tokens/s ({what})", f"{result.tokens_per_s:.0f} ({tokens} in {result.seconds:.1f} s)")
    return table
