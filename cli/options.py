"""Options shared by several commands, and where their defaults point."""
from __future__ import annotations

from pathlib import Path

import click

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_path(relative: str) -> str:
    """A path under the current directory when it exists there, else the one bundled with trtx."""
    return relative if Path(relative).exists() else str(REPO_ROOT / relative)


testdb_option = click.option("--testdb", "testdb", default=lambda: default_path("testlists/test-db"),
                             show_default="testlists/test-db", help="Folder of test-db YAML files.")
waives_option = click.option("--waives-file", default=lambda: default_path("waives/waives.txt"),
                             show_default="waives/waives.txt", help="The waive file.")
test_root_option = click.option("--test-root", default=lambda: default_path("tests/integration"),
                                show_default="tests/integration", help="Folder that test ids are relative to.")
match_option = click.option("--match", "matches", multiple=True, metavar="KEY=VALUE",
                            help="Override a detected system key (repeatable), e.g. --match gpu=B200.")
