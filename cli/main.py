"""The `trtx` click application: the top-level group, its commands, and the rule that bad input
is one line on stderr with exit code 2, never a traceback."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import click

from .cmd_launch import launch
from .cmd_report import report
from .cmd_run import run
from .cmd_select import list_tests, sysinfo
from .cmd_waive import waive
from .errors import UserError


def _version() -> str:
    try:
        return version("trtx")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


class TrtxGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=TrtxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name="trtx")
def cli() -> None:
    """trtx: regression harness for multi-GPU LLM accuracy and speculative-decoding tests.

    Reads YAML test-db lists and a waive file, launches the bundled PyTorch inference engine on
    N ranks under mpirun, gates accuracy and MTP acceptance against statistical thresholds, and
    reports the results.
    """


for command in (sysinfo, list_tests, run, report, waive, launch):
    cli.add_command(command)
