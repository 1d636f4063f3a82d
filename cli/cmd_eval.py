"""`trtx eval`: accuracy and MTP acceptance of one engine configuration on an eval set."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .errors import UserError
from .eval.evaluate import RankJobError, evaluate, evaluate_on_ranks
from .eval.models import default_dataset, resolve_model
from .fsutil import atomic_write
from .options import engine_options, timeout_option


@click.command("eval")
@click.option("--model", "model", default="tiny-arith", show_default=True,
              help="A checkpoint directory (config.json, *.safetensors, tokenizer.json) or a bundled model's name.")
@click.option("--dataset", type=click.Path(exists=True, dir_okay=False), help="JSONL eval set (default: the model's eval.jsonl).")
@engine_options
@click.option("--max-samples", type=click.IntRange(min=1), help="Evaluate only the first M problems.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the results as JSON here.")
@click.option("--samples", is_flag=True, help="With --json: include every prompt, output and grade.")
@timeout_option("30m", "s", "With tp x pp > 1: how long before the job counts as hung (every rank's stack is reported)")
@click.option("--log-dir", type=click.Path(file_okay=False),
              help="With tp x pp > 1: per-rank logs (default: a temporary folder, removed when the job succeeds).")
def eval_cmd(model, dataset, max_samples, json_out, samples, timeout_s, log_dir, **engine):
    """Generate greedily for every problem of the eval set, grade the answers, and report accuracy
    (with n), MTP acceptance (rate, mean acceptance length, per-position rates) and tokens/s.

    With --tp/--pp the engine runs on tp x pp ranks (one process each, under mpirun), every
    rank holding its share of the model; a failing or hung rank is reported with its stack."""
    from rich.console import Console
    from rich.table import Table

    from trtx.engine.engine_config import EngineConfig
    from trtx.engine.errors import ConfigError

    if samples and not json_out:
        raise UserError("--samples adds every sample to the --json file: give --json FILE with it")
    model_dir = resolve_model(model)
    data = Path(dataset) if dataset else default_dataset(model_dir)
    console = Console(highlight=False, stderr=True)
    try:
        config = EngineConfig(str(model_dir), **engine)     # every engine option checked here, once
        tp, pp, nextn = config.tensor_parallel_size, config.pipeline_parallel_size, config.mtp_nextn
        layout = f"{'adp' if config.attention_dp else 'tp'}{tp} pp{pp}"
        where = f"{layout}, " if config.world_size > 1 else ""
        with console.status(f"evaluating {model} on {data.name} ({where}mtp_nextn={nextn})"):
            if config.world_size == 1:
                result, _llm = evaluate(config, data, max_samples)
            else:
                result = evaluate_on_ranks(config, data, timeout_s, Path(log_dir) if log_dir else None, max_samples)
    except ConfigError as e:         # the user's configuration (e.g. no MTP module); any other error is a bug
        raise UserError(str(e)) from None
    except RankJobError as e:
        from .launch.report import print_report
        print_report(e.launch, console)
        raise SystemExit(e.launch.exit_code) from None
    table = Table(title=f"trtx eval: {model} on {data.name}" + (f" ({layout})" if config.world_size > 1 else ""))
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("accuracy", f"{result.accuracy:.1f} ({result.correct}/{result.n})")
    if result.spec:
        s = result.spec
        table.add_row(f"acceptance rate (nextn={nextn})", f"{s['acceptance_rate']:.3f} ({s['accepted']}/{s['proposed']})")
        table.add_row("mean acceptance length", f"{s['mean_acceptance_length']:.2f}")
        table.add_row("per-position acceptance", " ".join(f"{r:.2f}" for r in s["position_rates"]))
    table.add_row("tokens/s", f"{result.tokens_per_s:.0f} ({result.generated_tokens} in {result.seconds:.1f} s)")
    Console(highlight=False).print(table)
    if json_out:
        atomic_write(Path(json_out), json.dumps(result.as_dict(with_samples=samples), indent=2) + "\n")
