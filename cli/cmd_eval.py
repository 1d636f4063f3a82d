"""`trtx eval`: accuracy and MTP acceptance of one engine configuration on an eval set."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .errors import UserError
from .eval.evaluate import RankJobError, evaluate, evaluate_on_ranks
from .eval.models import default_dataset, resolve_model
from .fsutil import atomic_write
from .options import timeout_option


@click.command("eval")
@click.option("--model", "model", default="tiny-arith", show_default=True,
              help="A checkpoint directory (config.json, *.safetensors, tokenizer.json) or a bundled model's name.")
@click.option("--dataset", type=click.Path(exists=True, dir_okay=False), help="JSONL eval set (default: the model's eval.jsonl).")
@click.option("--tp", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tensor-parallel ranks (attention heads and MLP columns split across them).")
@click.option("--pp", type=click.IntRange(min=1), default=1, show_default=True,
              help="Pipeline stages (layers split across them). tp x pp ranks run under the launcher.")
@click.option("--adp", is_flag=True,
              help="Attention data parallel across the --tp ranks (each owns its requests), MLP tensor parallel.")
@click.option("--mtp-nextn", type=click.IntRange(0, 8), default=0, show_default=True,
              help="Draft this many tokens per step with the model's MTP module (0: no speculation).")
@click.option("--max-samples", type=click.IntRange(min=1), help="Evaluate only the first M problems.")
@click.option("--max-num-seqs", type=click.IntRange(min=1), default=64, show_default=True,
              help="Requests in flight at once (the batch size).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the results as JSON here.")
@click.option("--samples", is_flag=True, help="With --json: include every prompt, output and grade.")
@click.option("--warmup", is_flag=True, help="Run every batch shape once before the eval (shapes agreed by all ranks).")
@click.option("--warmup-oom", type=click.Choice(["skip", "stop"]), default="skip", show_default=True,
              help="A warmup shape that does not fit on some rank: every rank skips it, or all stop.")
@click.option("--graphs", is_flag=True,
              help="Replay decode steps as graphs captured per batch size, padded (implies --warmup; pp 1). "
                   "CUDA graphs on GPUs; on CPU the same padded path runs eagerly, for testing.")
@timeout_option("30m", "s", "With tp x pp > 1: how long before the job counts as hung (every rank's stack is reported)")
@click.option("--log-dir", type=click.Path(file_okay=False),
              help="With tp x pp > 1: per-rank logs (default: a temporary folder, removed when the job succeeds).")
def eval_cmd(model, dataset, tp, pp, adp, mtp_nextn, max_samples, max_num_seqs, json_out, samples, warmup, warmup_oom,
             graphs, timeout_s, log_dir):
    """Generate greedily for every problem of the eval set, grade the answers, and report accuracy
    (with n), MTP acceptance (rate, mean acceptance length, per-position rates) and tokens/s.

    With --tp/--pp the engine runs on tp x pp ranks (one process each, under mpirun), every
    rank holding its share of the model; a failing or hung rank is reported with its stack."""
    from rich.console import Console
    from rich.table import Table

    from trtx.engine.errors import ConfigError

    if samples and not json_out:
        raise UserError("--samples adds every sample to the --json file: give --json FILE with it")
    if graphs and pp > 1:
        raise UserError("--graphs needs --pp 1: pipeline stages run eagerly")
    model_dir = resolve_model(model)
    data = Path(dataset) if dataset else default_dataset(model_dir)
    console = Console(highlight=False, stderr=True)
    layout = f"{'adp' if adp else 'tp'}{tp} pp{pp}"
    where = f"{layout}, " if tp * pp > 1 else ""
    with console.status(f"evaluating {model} on {data.name} ({where}mtp_nextn={mtp_nextn})"):
        try:
            if tp * pp == 1:
                result, _llm = evaluate(model_dir, data, mtp_nextn=mtp_nextn, max_samples=max_samples,
                                        max_num_seqs=max_num_seqs, warmup=warmup, warmup_oom=warmup_oom,
                                        graphs=graphs)
            else:
                result = evaluate_on_ranks(model_dir, data, tp, pp, timeout_s, Path(log_dir) if log_dir else None,
                                           mtp_nextn=mtp_nextn, adp=adp, max_samples=max_samples,
                                           max_num_seqs=max_num_seqs, warmup=warmup, warmup_oom=warmup_oom,
                                           graphs=graphs)
        except ConfigError as e:         # the user's configuration (e.g. no MTP module); any other error is a bug
            raise UserError(str(e)) from None
        except RankJobError as e:
            from .launch.report import print_report
            print_report(e.launch, console)
            raise SystemExit(e.launch.exit_code) from None
    table = Table(title=f"trtx eval: {model} on {data.name}" + (f" ({layout})" if tp * pp > 1 else ""))
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("accuracy", f"{result.accuracy:.1f} ({result.correct}/{result.n})")
    if result.spec:
        s = result.spec
        table.add_row(f"acceptance rate (nextn={mtp_nextn})", f"{s['acceptance_rate']:.3f} ({s['accepted']}/{s['proposed']})")
        table.add_row("mean acceptance length", f"{s['mean_acceptance_length']:.2f}")
        table.add_row("per-position acceptance", " ".join(f"{r:.2f}" for r in s["position_rates"]))
    table.add_row("tokens/s", f"{result.tokens_per_s:.0f} ({result.generated_tokens} in {result.seconds:.1f} s)")
    Console(highlight=False).print(table)
    if json_out:
        atomic_write(Path(json_out), json.dumps(result.as_dict(with_samples=samples), indent=2) + "\n")
