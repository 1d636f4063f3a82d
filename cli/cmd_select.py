"""`trtx sysinfo` and `trtx list`: what this system is, and which tests of a context apply to it."""
from __future__ import annotations

import json

import click
from click.core import ParameterSource

from .lists.selection import explain_blocks, explain_waives, waives_here, with_markers
from .lists.sysinfo import system_info
from .lists.testdb import load_testdb
from .lists.waives import WaiveFile
from .options import match_option, platform_option, testdb_option, waives_option


@click.command()
@match_option
@platform_option
def sysinfo(matches, platforms):
    """Print the detected system keys as JSON (what test-db conditions match against), and
    `platforms`: the names full:PLATFORM/ waives match against."""
    click.echo(json.dumps(system_info(matches, platforms), indent=2, sort_keys=True))


@click.command("list")
@click.argument("context")
@match_option
@platform_option
@testdb_option
@waives_option
@click.option("--markers", is_flag=True, help="Show each test's TIMEOUT/ISOLATION markers and waives (for a "
              "folder, file or class: how many waives fall inside it).")
@click.option("--explain", is_flag=True, help="Say for every block which keys matched and which failed, and "
              "for every waive that can apply to a listed test whether its platform matched.")
def list_tests(context, matches, platforms, testdb, waives_file, markers, explain):
    """Print the tests of CONTEXT that apply to this system, one per line, in block order, each
    as written in the list (comment and markers left out)."""
    info = system_info(matches, platforms)
    db = load_testdb(testdb)
    # Read first, so that a bad waive file is an error before any output; without --markers or
    # --explain only when named (a mistyped --waives-file is an error, not silence).
    named = click.get_current_context().get_parameter_source("waives_file") != ParameterSource.DEFAULT
    waives = WaiveFile.load(waives_file) if markers or explain or named else None
    selected = db.select(context, info)
    if explain:
        for line in explain_blocks(db, context, info):
            click.echo(line)
        for line in explain_waives(selected, waives, info):
            click.echo(line)
    if markers:
        here = waives_here(waives, info)
    for entry in selected:
        click.echo(with_markers(entry, here) if markers else str(entry.ref))
    if not selected and not explain:        # an empty stdout alone reads like a list that is empty
        click.echo(f"no test of {context} is selected for this system: `trtx list {context} --explain` shows "
                   f"each block's checks", err=True)
