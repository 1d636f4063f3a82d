"""The `trtx` click application: the top-level group that every sub-command hangs from."""
from importlib.metadata import PackageNotFoundError, version

import click


def _version() -> str:
    try:
        return version("trtx")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name="trtx")
def cli() -> None:
    """trtx: regression harness for multi-GPU LLM accuracy and speculative-decoding tests.

    Reads YAML test-db lists and a waive file, launches the bundled PyTorch inference engine on
    N ranks under mpirun, gates accuracy and MTP acceptance against statistical thresholds, and
    reports the results.
    """
