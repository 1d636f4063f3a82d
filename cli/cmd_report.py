"""`trtx report`: one or more results folders (the shards of a run, merged) as a rich table,
Markdown, JSON or JUnit; with --history, the trends of a test list's history (docs/history.md)
instead. Exit code 1 when a test failed or errored (with --history: failed in its latest run),
2 for bad input."""
from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from .errors import UserError
from .fsutil import atomic_write
from .run import trends
from .run.history import default_history_path, load_history
from .run.report import compare, merge_shards, render_rich, rendered
from .run.results import RESULTS_FILE, load_results, newest_results_dir, read_events

DEFAULT_DIR = Path("results")
DEFAULT_RUNS = 20


def _write(output: str, text: str) -> None:
    try:
        atomic_write(output, text)
    except OSError as e:
        raise UserError(f"cannot write: {e.strerror}", output) from None


@click.command()
@click.argument("results_dirs", nargs=-1, metavar="[RESULTS_DIR]...", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["rich", "markdown", "json", "junit", "html"]), default="rich",
              show_default=True, help="html is for --history only, junit for results only.")
@click.option("--baseline", type=click.Path(file_okay=False),
              help="An earlier results directory: report new failures, fixed tests and metric deltas.")
@click.option("-o", "--output", default="-", show_default=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Write to this file (replaced atomically); `-` is standard output.")
@click.option("--history", is_flag=False, flag_value="", default=None, metavar="[FILE]",
              help="Report the trends of a history file instead: per test its streak, flip rate, first failing "
                   "run and gated metrics over the last runs. Bare: the history the results folder(s) were "
                   "appended to (RESULTS/history/CONTEXT.sqlite by default); put it after the folders "
                   "(`trtx report DIR --history`), else the folder is read as FILE.")
@click.option("--runs", type=click.IntRange(min=1), help=f"With --history: the window, in runs (default {DEFAULT_RUNS}).")
def report(results_dirs, fmt, baseline, output, history, runs):
    """Summarise RESULTS_DIR...: outcomes, metrics per test, and with --baseline what changed.
    Several folders (the shards of one run) are merged into one report; a test found in several
    keeps its worst outcome. Without a folder: results/, or else the newest results folder under
    it. Markdown fits a CI step summary ($GITHUB_STEP_SUMMARY).

    With --history: the trends of a history file (docs/history.md), worst test first; --format
    html is a page for a CI artifact.

    Exit code 1 when any test failed or errored (a test that never finished, and a run that
    recorded nothing, count as errors; with --history: in its latest run), 0 otherwise, 2 for
    bad input."""
    if history is not None:
        _report_history(history, results_dirs, fmt, baseline, output, runs or DEFAULT_RUNS)
        return
    if runs is not None:
        raise UserError("--runs is the window of --history: give --history too")
    if fmt == "html":
        raise UserError("--format html is for --history (the trends of a history); a run's results have rich, "
                        "markdown, json and junit")
    dirs = _results_dirs(results_dirs)
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


def _results_dirs(given: tuple[str, ...]) -> tuple:
    if given:
        return given
    found = newest_results_dir(DEFAULT_DIR)
    if found != DEFAULT_DIR:
        click.echo(f"trtx report: reading {found}/ (the newest results folder under {DEFAULT_DIR}/)", err=True)
    return (found,)


def _history_of(results_dirs: tuple) -> tuple[Path, str]:
    """The history file of the results folder(s) and its context: `run_start` in results.jsonl
    names the list and the history the run was appended to (by default RESULTS/history/CONTEXT.sqlite)."""
    found: dict[Path, str] = {}
    for folder in results_dirs:
        path = Path(folder) / RESULTS_FILE
        if not path.exists():
            raise UserError(f"no {RESULTS_FILE} here: not a trtx results directory", str(folder))
        start = next((e for e in read_events(path) if e["event"] == "run_start"), None)
        if start is None or not isinstance(start.get("context"), str):
            raise UserError("no run_start event naming the test list: cannot tell which history to read; "
                            "name it with --history FILE", str(path))
        if "history" in start and start["history"] is None:
            raise UserError("this run was appended to no history (trtx run --no-history): name a history with "
                            "--history FILE", str(path))
        used = start.get("history") or default_history_path(Path(folder), start["context"])   # older runs: no key
        found[Path(used)] = start["context"]
    if len(found) > 1:
        raise UserError(f"these results folders have {len(found)} history files ({', '.join(map(str, found))}): "
                        "name one with --history FILE")
    return next(iter(found.items()))


def _report_history(history: str, results_dirs: tuple, fmt: str, baseline: str | None, output: str,
                    runs: int) -> None:
    if fmt == "junit":
        raise UserError("--format junit is for a run's results, not for --history: use rich, markdown, json or html")
    if baseline:
        raise UserError("--baseline compares two runs' results; --history reports many runs: give one of them")
    if history:
        if results_dirs:
            raise UserError("--history FILE reads that file: give no results folder with it (or a bare "
                            "--history after the folder: trtx report DIR --history)")
        if Path(history).is_dir():
            raise UserError("is a folder: --history FILE takes a history file; for a results folder's history put "
                            "a bare --history after the folder: trtx report DIR --history", history)
        path, context = Path(history), None
    else:
        path, context = _history_of(_results_dirs(results_dirs))
    found = trends.trends(load_history(path, context), runs)
    if fmt == "rich" and output == "-":
        trends.render_rich(found, Console())
    else:
        _write(output, trends.rendered(fmt, found))
    if found.failing_now:
        raise SystemExit(1)
