"""`trtx launch -n N -- CMD ...`: run CMD on N ranks with per-rank logs, hang forensics and teardown."""
from __future__ import annotations

import shutil
import tempfile

import click

from .launch.launcher import Launch
from .launch.report import print_report
from .options import timeout_option


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("-n", "nranks", type=click.IntRange(min=1), required=True, help="Number of ranks.")
@timeout_option("1h", "s", "How long before the job counts as hung: stacks of every rank, then teardown (exit 124)")
@click.option("--launcher", type=click.Choice(["mpirun", "torchrun", "srun"]), default="mpirun", show_default=True)
@click.option("--log-dir", type=click.Path(file_okay=False),
              help="Per-rank logs (default: a temporary folder, removed when the job succeeds).")
@click.option("--quiet", is_flag=True, help="Only the summary, not every rank's output.")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def launch(nranks, timeout_s, launcher, log_dir, quiet, cmd):
    """Run CMD on N ranks. Each rank gets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT and one
    GPU where there are GPUs; its output goes to LOG_DIR/rank-N.log and, prefixed with its rank, to
    the console. A rank that fails ends the job at once; at the timeout every rank's Python stack
    is collected first. No rank outlives trtx."""
    temporary = log_dir is None
    log_dir = log_dir or tempfile.mkdtemp(prefix="trtx-launch-")
    job = Launch(nranks, list(cmd), timeout_s, log_dir, launcher=launcher,
                 on_line=None if quiet else (lambda rank, line: console.print(f"[dim]\\[rank {rank}][/] {escape(line)}")))
    job.start()
    from rich.console import Console   # ~50 ms: loaded while the ranks start
    from rich.markup import escape
    console = Console(highlight=False)
    result = job.wait()
    logs_removed = temporary and result.exit_code == 0      # a failed job keeps them: the report names them
    print_report(result, console, logs_removed)      # reads the rank logs: remove them after
    if logs_removed:
        shutil.rmtree(result.log_dir, ignore_errors=True)
    raise SystemExit(result.exit_code)
