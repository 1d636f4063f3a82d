"""`trtx run CONTEXT`: resolve a context's tests for this system and run them."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import click
from rich.console import Console

from .bundled import DURATIONS, default_path
from .errors import UserError
from .lists.selection import check_known, load_durations, parse_shard, plan, shard
from .lists.sysinfo import system_info
from .lists.testdb import load_testdb
from .lists.waives import WaiveFile
from .options import match_option, platform_option, test_root_option, testdb_option, timeout_option, waives_option
from .run.history import append_run, check_writable, default_history_path
from .run.report import render_markdown, render_rich
from .run.results import INTERRUPTED, JUNIT_FILE, KEPT, fresh_results_dir, write_durations
from .run.runner import RunOptions, Runner


@click.command()
@click.argument("context")
@match_option
@platform_option
@click.option("-k", "keyword", help="Only tests matching this pytest -k expression.")
@click.option("--results", "results_dir", default="results", show_default=True, type=click.Path(file_okay=False),
              help="Folder for results.jsonl, junit.xml, durations.json and per-process logs.")
@click.option("--junit", type=click.Path(dir_okay=False), help="JUnit XML path (default: RESULTS/junit.xml).")
@timeout_option("30m", "m", "Per test, when neither the list nor a waive says otherwise")
@click.option("--shard", "shard_spec", metavar="K/N", help="Run shard K of N (by recorded durations).")
@click.option("--durations", "durations_path", default=lambda: default_path(DURATIONS),
              metavar="FILE", help="Recorded test durations that --shard balances on, e.g. an earlier run's "
                   f"RESULTS/durations.json (every run writes one). Default: {DURATIONS} if "
                   "there is one; without durations, shards are split by count.")
@click.option("--retries", type=click.IntRange(0, 10), default=0, show_default=True, metavar="N",
              help="Run a failed test again, up to N times, when its failure was of the infrastructure "
                   "(the launcher failed before any rank started, a rendezvous or connection error); never a "
                   "gate, an assertion or an engine error. A test that passes on a retry is reported flaky.")
@click.option("--retry-timeouts", is_flag=True, help="With --retries: a timeout is worth a retry too.")
@click.option("--run-waived", is_flag=True,
              help="Run SKIP-waived tests too, as XFAIL: xpassed says the waive is stale (`trtx waive check --stale`).")
@click.option("--history", "history_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="The SQLite history this run is appended to (default: RESULTS/history/CONTEXT.sqlite); "
                   "`trtx report --history` reads it (docs/history.md).")
@click.option("--no-history", is_flag=True, help="Append this run to no history.")
@testdb_option
@waives_option
@test_root_option
def run(context, matches, platforms, keyword, results_dir, junit, timeout_s, shard_spec, durations_path, retries,
        retry_timeouts, run_waived, history_path, no_history, testdb, waives_file, test_root):
    """Run the tests of CONTEXT that apply to this system, with waives applied.

    Tests run under pytest in list order; ISOLATION tests and tests with their own pytest
    arguments each get a process of their own. Results are written as each test starts and
    finishes; a report ends the run, which is appended to the list's history and, when
    $GITHUB_STEP_SUMMARY is set, written there as Markdown. Exit code 0 only if nothing failed
    (a flaky test passed), 1 if a test failed, 2 for bad input; SIGTERM or SIGINT stops the
    running test, reports, and exits 143 or 130. Files written and log lines: docs/results.md.
    """
    if retry_timeouts and not retries:
        raise UserError("--retry-timeouts needs --retries N")
    if history_path and no_history:
        raise UserError("--history FILE and --no-history: give one of them")
    info = system_info(matches, platforms)
    entries = load_testdb(testdb).select(context, info)
    waives = WaiveFile.load(waives_file)
    check_known(entries, test_root)
    parts = parse_shard(shard_spec)
    if parts:
        entries = shard(entries, *parts, load_durations(Path(durations_path)))
    console = Console(stderr=False)
    if not entries:
        console.print(f"no tests of {context} apply to this system (see `trtx list {context} --explain`)")
        return

    # Absolute: the pytest children run in the test root, where a relative path would not resolve.
    results_path = Path(results_dir).resolve()
    history = None if no_history else Path(history_path or default_history_path(results_path, context)).resolve()
    if history is not None and history.is_relative_to(results_path) and \
            history.relative_to(results_path).parts[0] not in KEPT:
        raise UserError(f"--history {history_path}: inside the results folder, where the next run would move it to "
                        "previous/; keep it outside, or in the folder's history/")
    if history is not None:
        check_writable(history, context)    # another list's, no history, read-only: said now, not after the run
    fresh_results_dir(results_path)
    junit_path = Path(junit).resolve() if junit else results_path / JUNIT_FILE
    junit_path.parent.mkdir(parents=True, exist_ok=True)     # written from the start: red until the end
    # How many tests run is known only as each pytest child collects: the summary counts them.
    filtered = f", filtered by -k {keyword}" if keyword else ""
    console.print(f"trtx run {context}: {len(entries)} list entries{filtered}, results in {results_path}/",
                  soft_wrap=not console.is_terminal, markup=False, highlight=False)
    runner = Runner(Path(test_root).resolve(), results_path, junit_path, keyword, console, context, shard_spec,
                    RunOptions(retries, retry_timeouts, run_waived), history)
    started = time.time()
    results = runner.run(plan(entries, waives, info, timeout_s / 60))
    write_durations(results, results_path / "durations.json")
    render_rich(results, None, console)
    history_error = history is not None and results and not _append(history, context, shard_spec, results, started,
                                                                    runner.interrupted)
    _step_summary(results, context)
    for r in results:
        if run_waived and r.waive and r.outcome == "xpassed":
            console.print(f"waive may be stale: {r.nodeid} passed although waived {r.waive} "
                          "(`trtx waive check --stale` over a few runs)", soft_wrap=True, markup=False, highlight=False)
    if not results:          # a -k typo must not read as a green run
        why = f"-k {keyword} matched none of their tests" if keyword else "pytest collected none of their tests"
        raise UserError(f"no test ran: {len(entries)} list entries of {context}, and {why}")
    if runner.interrupted:
        raise SystemExit(128 + runner.interrupted)   # the shell's code for death by that signal
    if any(r.failed for r in results):
        raise SystemExit(1)
    if history_error:
        raise SystemExit(UserError.exit_code)


def _append(history: Path, context: str, shard: str | None, results, started: float, interrupted: int | None) -> bool:
    """Append the run to its history; False (said on stderr) when that failed after all: the
    tests' verdict still decides the exit code, which is 2 only when they passed."""
    # What is no test's own result is left out: the run's error when it was cut short (`runs`
    # records that it was interrupted), and a test stopped by the signal, which gave no verdict.
    tests = [r for r in results if r.entry and not r.message.startswith(INTERRUPTED)]
    try:
        number = append_run(history, context, shard, tests, started, time.time(),
                            signal.Signals(interrupted).name if interrupted else None)
    except UserError as e:
        click.echo(f"Error: {e}", err=True)
        return False
    click.echo(f"trtx run: run #{number} appended to the history {history}", err=True)
    return True


def _step_summary(results, context: str) -> None:
    """GitHub Actions shows the Markdown appended to $GITHUB_STEP_SUMMARY on the run's page. A
    summary that cannot be written is said on stderr: it must not turn the run's verdict."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path or not results:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(render_markdown(results, None, f"trtx run {context}") + "\n")
    except OSError as e:
        click.echo(f"trtx run: cannot write the step summary to {path}: {e.strerror}", err=True)
