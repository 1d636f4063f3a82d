"""`trtx report`: one or more results folders (the shards of a run, merged) as a rich table,
Markdown, JSON or JUnit; exit code 1 when a test failed or errored, 2 for bad input."""
from __future__ import annotations

import io
from pathlib import Path

import click
from rich.console import Console

from .errors import UserError
from .fsutil import atomic_write
from .report import compare, merge_shards, render_json, render_markdown, render_rich
from .results import RESULTS_FILE, junit_xml, load_results

DEFAULT_DIR = Path("results")


def _default_results_dir() -> Path:
    """results/ when it holds a run; else the results folder under it written last (`make run`
    writes results/l0_cpu)."""
    if (DEFAULT_DIR / RESULTS_FILE).exists():
        return DEFAULT_DIR
    runs = sorted(DEFAULT_DIR.glob(f"*/{RESULTS_FILE}"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UserError(f"no {RESULTS_FILE} in {DEFAULT_DIR}/ nor in a folder under it: "
                        "name the results folder (`trtx run --results DIR` wrote it)")
    click.echo(f"trtx report: reading {runs[-1].parent}/ (the newest results folder under {DEFAULT_DIR}/)", err=True)
    return runs[-1].parent


def _rendered(fmt: str, results, comparison) -> str:
    if fmt == "rich":                  # to a file: the plain lines, as in a CI log
        text = io.StringIO()
        render_rich(results, comparison, Console(file=text))
        return text.getvalue()
    if fmt == "junit":
        return junit_xml(results)
    return render_markdown(results, comparison) if fmt == "markdown" else render_json(results, comparison) + "\n"


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
    dirs = results_dirs or (_default_results_dir(),)
    results, repeated = merge_shards([load_results(d) for d in dirs])
    for nodeid in repeated:
        click.echo(f"trtx report: {nodeid} is in several results folders: kept its worst outcome", err=True)
    comparison = compare(results, load_results(baseline)) if baseline else None
    if fmt == "rich" and output == "-":
        render_rich(results, comparison, Console())
    else:
        _write(output, _rendered(fmt, results, comparison))
    if any(r.failed for r in results):
        raise SystemExit(1)
