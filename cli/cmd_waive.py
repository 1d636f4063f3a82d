"""`trtx waive add|remove|list|check`: edit and audit the waive file."""
from __future__ import annotations

from pathlib import Path

import click

from .errors import UserError
from .lists.collect import KnownTests
from .lists.sysinfo import check_platform, system_info
from .lists.testline import TestRef, parse_ref
from .lists.waives import MARKERS, Waive, WaiveFile, checked, editing, hygiene
from .options import edited_waives_file, edited_waives_option, match_option, platform_option, test_root_option, \
    waives_option
from .run.history import HISTORY_DIR, load_history
from .run.trends import stale_waives


def _ref(test_id: str) -> TestRef:
    """A test id as given on the command line, possibly with pytest args: 'f.py -k "expr"'."""
    try:
        return parse_ref(test_id)
    except ValueError as e:
        raise UserError(str(e)) from None


@click.group()
def waive():
    """Edit and audit the waive file (TensorRT-LLM's waives.txt format)."""


@waive.command()
@click.argument("test_id")
@click.option("--reason", required=True, help="Why, ideally with a bug link (for TIMEOUT: minutes).")
@click.option("--marker", type=click.Choice(MARKERS), default="SKIP", show_default=True)
@click.option("--platform", help="Limit the waive to systems with the platform name PLATFORM (writes full:PLATFORM/).")
@click.option("--force", is_flag=True, help="Add even if TEST_ID names no existing test.")
@edited_waives_option
@test_root_option
def add(test_id, reason, marker, platform, force, waives_file, test_root):
    """Waive TEST_ID: append an entry, leaving the rest of the file byte for byte as it was."""
    ref = _ref(test_id)
    waives_file = edited_waives_file(waives_file)
    if platform is not None:
        check_platform(platform, "--platform ")
    if not reason.strip():
        raise UserError("--reason must say why (ideally with a bug link); it is empty")
    if marker == "TIMEOUT" and not reason.strip().isdecimal():
        raise UserError(f"--reason {reason.strip()!r}: a TIMEOUT waive takes whole minutes, like --reason 90 "
                        "(TensorRT-LLM reads an integer)")
    entry = checked(Waive(ref, marker, reason.strip(), platform, 0))
    if not force:
        known = KnownTests(test_root)
        if not known(ref):
            near = known.closest(ref)
            hint = f"; closest: {', '.join(near)}" if near else ""
            raise UserError(f"{ref.test_id} names no test under {test_root}{hint} (--force adds it anyway)")
    with editing(waives_file) as wf:
        if any(w.platform == platform for w in wf.matching(ref)):
            raise UserError(f"{ref} is already waived; remove it first to change the entry", waives_file)
        wf.add(entry)
    click.echo(f"waived: {entry.render()}")


@waive.command()
@click.argument("test_id")
@edited_waives_option
def remove(test_id, waives_file):
    """Remove every entry for TEST_ID (all platforms)."""
    ref = _ref(test_id)
    waives_file = edited_waives_file(waives_file)
    with editing(waives_file) as wf:
        gone = wf.remove(ref)
        if not gone:
            raise UserError(f"{ref} is not waived", waives_file)
    for w in gone:
        click.echo(f"removed (was line {w.line}): {w.render()}")


@waive.command("list")
@match_option
@platform_option
@click.option("--all", "show_all", is_flag=True, help="Include full:PLATFORM/ entries for other systems.")
@waives_option
def list_waives(matches, platforms, show_all, waives_file):
    """Print the waive entries that apply to this system (or all of them); a full:PLATFORM/ entry
    says which of this system's platform names it matched, or that none did."""
    info = system_info(matches, platforms)
    entries = WaiveFile.load(waives_file).entries
    if not entries:
        click.echo(f"no entries in {waives_file}")
        return
    shown = 0
    for w in entries:
        note = ""
        if w.platform is not None:
            hit = w.platform_match(info)
            note = f"  [platform {hit} matched]" if hit else f"  [no platform of this system is {w.platform}]"
        if show_all or w.applies_to(info):
            click.echo(f"{w.line}: {w.render()}{note}")
            shown += 1
    if not shown:
        names = ", ".join(info["platforms"]) or "none"
        click.echo(f"no entries apply to this system: all {len(entries)} are for other platforms "
                   f"(this system's: {names}; --all lists them)")


STALE_RUNS = 3
DEFAULT_HISTORIES = Path("results") / HISTORY_DIR


@waive.command()
@waives_option
@test_root_option
@click.option("--stale", is_flag=True,
              help="Also name the waives whose tests passed their last --runs runs in the history.")
@click.option("--history", type=click.Path(dir_okay=False),
              help=f"With --stale: the history file (default: the only {DEFAULT_HISTORIES}/*.sqlite or "
                   f"results/*/{HISTORY_DIR}/*.sqlite).")
@click.option("--runs", type=click.IntRange(min=1),
              help=f"With --stale: how many of a test's latest results under its waive (an XFAIL waive's, or "
                   f"from `trtx run --run-waived`) must all be passes (default {STALE_RUNS}).")
def check(waives_file, test_root, stale, history, runs):
    """Audit the waive file: entries that match no test, reasons without a bug link, duplicates
    and conflicting markers; with --stale also waives whose tests passed their last runs in the
    history (docs/history.md). Exit code 1 when there is any."""
    if not stale and (history or runs):
        raise UserError("--history and --runs are for --stale")
    wf = WaiveFile.load(waives_file)
    found, never_ran = [], []
    if stale:                       # before collecting the tests: a bad history fails at once
        runs = runs or STALE_RUNS
        path = Path(history) if history else _only_history()
        found, never_ran = stale_waives(load_history(path), wf.entries, runs)
    problems = [(w.line, what) for w, what in hygiene(wf, KnownTests(test_root))]
    problems += [(s.waive.line, f"stale: {s.nodeid} passed its last {runs} runs (runs #{s.first_run}-#{s.last_run}): "
                                f"trtx waive remove {_quoted(str(s.waive.ref))}") for s in found]
    for line, what in sorted(problems, key=lambda p: p[0]):
        click.echo(f"{waives_file}:{line}: {what}")
    if never_ran:
        click.echo(f"hint: {len(never_ran)} waives have no run of their tests in {path}: `trtx run --run-waived` "
                   "runs waived tests, so that the history can tell when one is stale")
    click.echo(f"{len(wf.entries)} entries, {len(problems)} problems")
    if problems:
        raise SystemExit(1)


def _only_history() -> Path:
    """--history's default: the one history file under results/ (results/history/, or a results
    folder's below it: `make run` writes results/l0_cpu/history/l0_cpu.sqlite), else the user
    must name it."""
    found = sorted([*DEFAULT_HISTORIES.glob("*.sqlite"), *DEFAULT_HISTORIES.parent.glob(f"*/{HISTORY_DIR}/*.sqlite")])
    if len(found) != 1:
        what = f"{len(found)} history files" if found else "no history file"
        raise UserError(f"{what} in {DEFAULT_HISTORIES}/ or results/*/{HISTORY_DIR}/: name the history with "
                        "--history FILE")
    return found[0]


def _quoted(text: str) -> str:
    """`text` in single quotes for a shell, always: a test id often holds brackets or spaces."""
    return "'" + text.replace("'", "'\\''") + "'"
