"""`trtx sysinfo` and `trtx list`: what this system is, and which tests of a context apply to it."""
from __future__ import annotations

import json

import click

from .options import match_option, testdb_option, waives_option
from .sysinfo import system_info
from .testdb import load_testdb
from .waives import WaiveFile


@click.command()
@match_option
def sysinfo(matches):
    """Print the detected system keys as JSON (what test-db conditions match against)."""
    click.echo(json.dumps(system_info(matches), indent=2, sort_keys=True))


@click.command("list")
@click.argument("context")
@match_option
@testdb_option
@waives_option
@click.option("--markers", is_flag=True, help="Show each test's TIMEOUT/ISOLATION markers and waives.")
@click.option("--explain", is_flag=True, help="Say for every block which keys matched and which failed.")
def list_tests(context, matches, testdb, waives_file, markers, explain):
    """Print the tests of CONTEXT that apply to this system, one per line, in block order."""
    info = system_info(matches)
    db = load_testdb(testdb)
    if explain:
        for n, block in enumerate(db.blocks(context), 1):
            checks = block.condition.checks(info)
            verdict = "applies" if all(c.ok for c in checks) else "does not apply"
            click.echo(f"# block {n} ({block.path}:{block.line}): {verdict}, {len(block.tests)} tests")
            for c in checks:
                actual = "absent" if c.actual is None else c.actual
                click.echo(f"#   {'ok  ' if c.ok else 'FAIL'} {c.key}: {actual} (wanted {c.wanted})")
    waives = WaiveFile.load(waives_file) if markers else None
    for entry in db.select(context, info):
        line = str(entry.ref)
        if markers:
            extra = [entry.markers] if entry.markers else []
            extra += [f"waived: {w.marker} ({w.reason})" for w in waives.matching(entry.ref, info)]
            line = "  ".join([line, *extra])
        click.echo(line)
