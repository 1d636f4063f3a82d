"""The `trtx` click application: the top-level group, its commands, and the rule that bad input
is one line on stderr with exit code 2, never a traceback."""
from __future__ import annotations

import importlib
import signal

import click

from .errors import UserError

# name -> "module:attribute". Commands load on first use, so `trtx launch` does not pay for the
# imports of `trtx run` (the launch overhead is a measured goal: benchmarks/bench_launch.py).
COMMANDS = {
    "sysinfo": "cmd_select:sysinfo",
    "list": "cmd_select:list_tests",
    "run": "cmd_run:run",
    "report": "cmd_report:report",
    "waive": "cmd_waive:waive",
    "launch": "cmd_launch:launch",
    "eval": "cmd_eval:eval_cmd",
    "lm-eval": "cmd_lm_eval:lm_eval_cmd",
}


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is: every command then winds down as on Ctrl-C
    (ranks and pytest children killed, results and reports written), exiting 128 + signal."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum, _frame):
    raise Stopped(signum)


def take_stop_signals() -> None:
    """Ctrl-C and SIGTERM stop trtx cleanly. A shell script that starts trtx in the background
    (`trtx launch ... &`) hands it SIGINT ignored, and Python then never installs its own
    handler: take SIGINT back, or nothing could interrupt the job but SIGKILL."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_stopped)


class TrtxGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), attr)

    def invoke(self, ctx):
        take_stop_signals()
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=TrtxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trtx", prog_name="trtx")   # looked up only when asked
def cli() -> None:
    """trtx: regression harness for multi-GPU LLM accuracy and speculative-decoding tests.

    Reads YAML test-db lists and a waive file, launches the bundled PyTorch inference engine on
    N ranks under mpirun, gates accuracy and MTP acceptance against statistical thresholds, and
    reports the results.
    """
