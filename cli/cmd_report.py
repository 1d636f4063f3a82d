"""`trtx report`: one or more results folders (the shards of a run, merged) as a rich table,
Markdown, JSON or JUnit; exit code 1 when a test failed or errored, 2 for bad input."""
from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from .errors import UserError
from .fsutil import atomic_write
from .run.report import compare, merge_shards, render_rich, rendered
from .run.results import load_results, newest_results_dir

DEFAULT_DIR = Path("results")


def _write(output: str, text: str) -> None:
    try:
        atomic_write(output, text)
    except OSError as e:
        raise UserError(f"cannot write: {e.strerror}", output) from None


@click.command()
@click.argument("results_dirs", nargs=-1, metavar="[RESULTS_DIR]...", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["rich", "markdown", "json", "junit"]), default="rich",
              show_default=True)
@click.option("--baseline", type=click.Path(file_okay=False),
              help="An earlier results directory: report new failures, fixed tests and metric deltas.")
@click.option("-o", "--output", default="-", show_default=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Write to this file (replaced atomically); `-` is standard output.")
def report(results_dirs, fmt, baseline, output):
    """Summarise RESULTS_DIR...: outcomes, metrics per test, and with --baseline what changed.
    Several folders (the shards of one run) are merged into one report; a test found in several
    keeps its worst outcome. Without a folder: results/, or else the newest results folder under
    it. Markdown fits a CI step summary ($GITHUB_STEP_SUMMARY).

    Exit code 1 when any test failed or errored (a test that never finished, and a run that
    recorded nothing, count as errors), 0 otherwise, 2 for bad input."""
    dirs = results_dirs
    if not dirs:
        found = newest_results_dir(DEFAULT_DIR)
        if found != DEFAULT_DIR:
            click.echo(f"trtx report: reading {found}/ (the newest results folder under {DEFAULT_DIR}/)", err=True)
        dirs = (found,)
    results, repeated = merge_shards([load_results(d) for d in dirs])
    for nodeid in repeated:
        click.echo(f"trtx report: {nodeid} is in several results folders: kept its worst outcome", err=True)
    comparison = compare(results, load_results(baseline)) if baseline else None
    if fmt == "rich" and output == "-":
        render_rich(results, comparison, Console())
    else:
        _write(output, rendered(fmt, results, comparison))
    if any(r.failed for r in results):
        raise SystemExit(1)
