"""Click options shared by several commands (their defaults point at bundled.py's paths), and
--timeout's duration type."""
from __future__ import annotations

import re
from pathlib import Path

import click

from .bundled import TEST_ROOT, TESTDB, WAIVES, default_path
from .errors import UserError

_FALLBACK = "here, else the one bundled with trtx"
testdb_option = click.option("--testdb", "testdb", default=lambda: default_path(TESTDB),
                             help=f"Folder of test-db YAML files (default: {TESTDB} {_FALLBACK}).")
waives_option = click.option("--waives-file", default=lambda: default_path(WAIVES),
                             help=f"The waive file (default: {WAIVES} {_FALLBACK}).")
test_root_option = click.option("--test-root", default=lambda: default_path(TEST_ROOT),
                                help=f"Folder that test ids are relative to (default: {TEST_ROOT} {_FALLBACK}).")
# Editing never falls back to the bundled file: a command run outside a project must not edit trtx itself.
edited_waives_option = click.option("--waives-file", help=f"The waive file to edit (default: {WAIVES} here).")


def edited_waives_file(waives_file: str | None) -> str:
    """--waives-file of an editing command: as given, else ./waives/waives.txt, which must exist."""
    if waives_file is not None:
        return waives_file
    if not Path(WAIVES).exists():
        raise UserError(f"no {WAIVES} in this folder: run where the project's waive file is, or name it with "
                        "--waives-file (editing commands never edit the waive file bundled with trtx)")
    return WAIVES


match_option = click.option("--match", "matches", multiple=True, metavar="KEY=VALUE",
                            help="Override a detected system key (repeatable), e.g. --match gpu=B200.")
platform_option = click.option("--platform", "platforms", multiple=True, metavar="NAME",
                               help="Add a platform name for full:NAME/ waives (repeatable), e.g. --platform DGX_H100.")


_SECONDS = {"s": 1, "m": 60, "h": 3600}
_UNIT_NAMES = {"s": "seconds", "m": "minutes", "h": "hours"}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PART = re.compile(rf"({_NUMBER})([smh])")


class Duration(click.ParamType):
    """A duration: 90s, 30m, 1.5h, 2h30m, or a bare number of `bare_unit` ("s", "m" or "h": each
    command keeps the unit its bare numbers always had). Converts to seconds (a float)."""
    name = "duration"

    def __init__(self, bare_unit: str):
        self.bare_unit = bare_unit

    def convert(self, value, param, ctx) -> float:
        text = "".join(str(value).lower().split())
        if re.fullmatch(_NUMBER, text):
            text += self.bare_unit
        if not re.fullmatch(rf"(?:{_NUMBER}[smh])+", text):
            self.fail(f"{value!r} is not a duration: use e.g. 90s, 30m, 1.5h, 2h30m, "
                      f"or a bare number of {_UNIT_NAMES[self.bare_unit]}", param, ctx)
        seconds = sum(float(number) * _SECONDS[unit] for number, unit in _PART.findall(text))
        if seconds <= 0:
            self.fail(f"{value!r}: a duration must be longer than 0", param, ctx)
        return seconds


def timeout_option(default: str, bare_unit: str, what: str):
    """--timeout (to the parameter timeout_s, in seconds); its help says what a bare number means."""
    return click.option("--timeout", "timeout_s", type=Duration(bare_unit), default=default, show_default=True,
                        help=f"{what}. 90s, 30m, 1.5h or 2h30m; a bare number is {_UNIT_NAMES[bare_unit]}.")


def engine_options(command):
    """The engine's command-line options, made from EngineConfig's fields, where each is declared
    once (help, default, range or choices, flags): --the-field-name plus its short flags. The
    command receives them under the field names."""
    from trtx.engine.engine_config import options

    for f in reversed(options()):
        meta = f.metadata
        if meta["flags"] is None:
            continue
        names = ["--" + f.name.replace("_", "-"), *meta["flags"], f.name]
        if meta["kind"] is bool:
            command = click.option(*names, is_flag=True, default=f.default, help=meta["help"])(command)
            continue
        kind = click.Choice(meta["choices"]) if meta["choices"] else \
            click.IntRange(meta["low"], meta["high"]) if meta["kind"] is int else str
        command = click.option(*names, type=kind, default=f.default, show_default=f.default is not None,
                               help=meta["help"])(command)
    return command
