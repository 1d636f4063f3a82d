"""`trtx sysinfo` and `trtx list`: what this system is, and which tests of a context apply to it."""
from __future__ import annotations

import json

import click

from .options import match_option, platform_option, testdb_option, waives_option
from .sysinfo import system_info
from .testdb import load_testdb
from .waives import WaiveFile, WaiveIndex


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
              "for every waive of a listed test whether its platform matched.")
def list_tests(context, matches, platforms, testdb, waives_file, markers, explain):
    """Print the tests of CONTEXT that apply to this system, one per line, in block order, each
    as written in the list (comment and markers left out)."""
    info = system_info(matches, platforms)
    db = load_testdb(testdb)
    if explain:
        for n, block in enumerate(db.blocks(context), 1):
            checks = block.condition.checks(info)
            verdict = "applies" if all(c.ok for c in checks) else "does not apply"
            click.echo(f"# block {n} ({block.path}:{block.line}): {verdict}, {len(block.tests)} tests")
            for c in checks:
                actual = "absent" if c.actual is None else c.actual
                click.echo(f"#   {'ok  ' if c.ok else 'FAIL'} {c.key}: {actual} (wanted {c.wanted})")
    waives = WaiveFile.load(waives_file) if markers or explain else None
    selected = db.select(context, info)
    if explain:
        _explain_waives(selected, waives, info)
    if markers:
        here = WaiveIndex([w for w in waives.entries if w.applies_to(info)])
    for entry in selected:
        line = str(entry.ref)
        if markers:
            found = here.for_entry(entry.ref)
            # A longer id lies inside the entry (a folder, file or class): counted, as `list` collects no tests.
            inside = [w for w in found if len(w.ref.test_id) > len(entry.ref.test_id)]
            extra = [entry.markers] if entry.markers else []
            extra += [f"waived: {w.label}" for w in found if w not in inside]
            extra += [f"waived inside: {len(inside)}"] if inside else []
            line = "  ".join([line, *extra])
        click.echo(line)


def _explain_waives(entries, waives: WaiveFile, info: dict) -> None:
    """For each waive of a listed test, in file line order: whether it applies here, and which
    platform name decided."""
    names = ", ".join(info["platforms"]) or "none"
    click.echo(f"# waives ({waives.path}); this system's platforms: {names}")
    found = {w for entry in entries for w in waives.matching(entry.ref)}
    for w in sorted(found, key=lambda w: w.line):
        if w.platform is None:
            verdict = "applies (no full:PLATFORM/)"
        elif hit := w.platform_match(info):
            verdict = f"applies (platform {hit} matched full:{w.platform}/)"
        else:
            verdict = f"does not apply (no platform of this system is {w.platform})"
        click.echo(f"#   line {w.line}: {w.render()}: {verdict}")
