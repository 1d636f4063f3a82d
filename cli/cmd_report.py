"""`trtx report`: a results directory as a rich table, Markdown, JSON or JUnit."""
from __future__ import annotations

import click
from rich.console import Console

from .report import compare, render_json, render_markdown, render_rich
from .results import load_results, write_junit


@click.command()
@click.argument("results_dir", default="results", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["rich", "markdown", "json", "junit"]), default="rich",
              show_default=True)
@click.option("--baseline", type=click.Path(file_okay=False),
              help="An earlier results directory: report new failures, fixed tests and metric deltas.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to a file instead of stdout.")
def report(results_dir, fmt, baseline, output):
    """Summarise RESULTS_DIR (default: results): outcomes, metrics per test, and with --baseline
    what changed. Markdown fits a CI step summary ($GITHUB_STEP_SUMMARY)."""
    results = load_results(results_dir)
    comparison = compare(results, load_results(baseline)) if baseline else None
    if fmt == "junit":
        write_junit(results, output or "/dev/stdout")
        return
    if fmt == "rich":
        console = Console(file=open(output, "w")) if output else Console()
        render_rich(results, comparison, console)
        return
    text = render_markdown(results, comparison) if fmt == "markdown" else render_json(results, comparison)
    if output:
        with open(output, "w") as f:
            f.write(text)
    else:
        click.echo(text, nl=False)
