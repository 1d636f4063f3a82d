"""A finished multi-rank job for the console (`trtx launch`, and `trtx eval` on ranks when the
job fails): the failing rank's traceback or every rank's stack, a table of the ranks, and where
the logs are. rich loads only here, once the ranks run."""
from __future__ import annotations

from .launcher import LaunchResult


def print_report(result: LaunchResult, console, logs_removed: bool = False) -> None:
    from rich.markup import escape
    from rich.table import Table
    if result.reason == "failed" and result.first_failure is not None:
        rank = result.ranks[result.first_failure]
        console.print(f"[bold red]rank {rank.rank} failed ({rank.state})[/]; the job was torn down")
        if rank.traceback():
            console.print(escape(rank.traceback()))
    elif result.reason == "timeout":
        console.print(f"[bold red]timed out after {result.duration_s:.0f} s[/]: stacks of every rank follow")
        for r in result.ranks:
            console.print(f"[bold]--- rank {r.rank} ({r.state}) ---[/]")
            console.print(escape(r.stack or "(no stack: the rank did not answer)"))
    elif result.reason == "launcher-error":
        console.print(f"[bold red]the launcher failed before the ranks started[/] ({result.tries} tries)")
        console.print(escape(result.launcher_output.strip()[-3000:]))
    table = Table(title=f"trtx launch: {result.reason} in {result.duration_s:.1f} s")
    for col in ("rank", "state", "where", "last log lines"):
        table.add_column(col, overflow="fold")
    for r in result.ranks:
        last = "\n".join(ln for ln in r.log_text().strip().splitlines()[-3:])
        table.add_row(str(r.rank), r.state, r.where(), escape(last))
    console.print(table)
    where = "temporary logs removed (--log-dir keeps them)" if logs_removed else f"logs in {result.log_dir}"
    console.print(escape(where), soft_wrap=True)      # a line of its own, never wrapped: a path to copy
