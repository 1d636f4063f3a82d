"""`trtx run CONTEXT`: resolve a context's tests for this system and run them."""
from __future__ import annotations

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
from .run.report import render_rich
from .run.results import JUNIT_FILE, fresh_results_dir, write_durations
from .run.runner import Runner


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
@testdb_option
@waives_option
@test_root_option
def run(context, matches, platforms, keyword, results_dir, junit, timeout_s, shard_spec, durations_path, testdb, waives_file,
        test_root):
    """Run the tests of CONTEXT that apply to this system, with waives applied.

    Tests run under pytest in list order; ISOLATION tests and tests with their own pytest
    arguments each get a process of their own. Results are written as each test starts and
    finishes; a report ends the run. Exit code 0 only if nothing failed, 1 if a test failed, 2 for
    bad input; SIGTERM or SIGINT stops the running test, reports, and exits 143 or 130.
    Files written and log lines: docs/results.md.
    """
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
    fresh_results_dir(results_path)
    junit_path = Path(junit).resolve() if junit else results_path / JUNIT_FILE
    junit_path.parent.mkdir(parents=True, exist_ok=True)     # written from the start: red until the end
    # How many tests run is known only as each pytest child collects: the summary counts them.
    filtered = f", filtered by -k {keyword}" if keyword else ""
    console.print(f"trtx run {context}: {len(entries)} list entries{filtered}, results in {results_path}/",
                  soft_wrap=not console.is_terminal, markup=False, highlight=False)
    runner = Runner(Path(test_root).resolve(), results_path, junit_path, keyword, console, context, shard_spec)
    results = runner.run(plan(entries, waives, info, timeout_s / 60))
    write_durations(results, results_path / "durations.json")
    render_rich(results, None, console)
    if not results:          # a -k typo must not read as a green run
        why = f"-k {keyword} matched none of their tests" if keyword else "pytest collected none of their tests"
        raise UserError(f"no test ran: {len(entries)} list entries of {context}, and {why}")
    if runner.interrupted:
        raise SystemExit(128 + runner.interrupted)   # the shell's code for death by that signal
    if any(r.failed for r in results):
        raise SystemExit(1)
