"""Rendering results: a rich table for terminals, Markdown for CI step summaries, JSON for
machines; and comparing a run against a baseline run."""
from __future__ import annotations

import json
from dataclasses import asdict

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .results import TestResult

ORDER = ("failed", "error", "xpassed", "passed", "xfailed", "skipped")
STYLES = {"passed": "green", "failed": "bold red", "error": "bold red", "skipped": "yellow",
          "xfailed": "yellow", "xpassed": "cyan", "running": "blue"}
ICONS = {"passed": "✅", "failed": "❌", "error": "💥", "skipped": "⏭️", "xfailed": "⚠️", "xpassed": "❓"}


def summary(results: list[TestResult]) -> dict:
    counts = {k: 0 for k in ORDER}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    counts["waived"] = sum(r.waive is not None for r in results)
    counts["total"] = len(results)
    return counts


def compare(results: list[TestResult], baseline: list[TestResult]) -> dict:
    """New failures, fixed tests, and metric deltas against a baseline run."""
    base = {r.nodeid: r for r in baseline}
    new_failures, fixed, deltas = [], [], []
    for r in results:
        b = base.get(r.nodeid)
        if r.failed and (b is None or not b.failed):
            new_failures.append(r.nodeid)
        if b is not None and b.failed and r.outcome == "passed":
            fixed.append(r.nodeid)
        if b is not None:
            for k, v in r.metrics.items():
                old = b.metrics.get(k)
                if isinstance(v, (int, float)) and isinstance(old, (int, float)) and not isinstance(v, bool):
                    deltas.append({"test": r.nodeid, "metric": k, "baseline": old, "value": v, "delta": v - old})
    return {"new_failures": new_failures, "fixed": fixed, "metric_deltas": deltas}


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _metrics(r: TestResult) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in r.metrics.items())


def _first_line(r: TestResult) -> str:
    lines = [ln for ln in r.message.strip().splitlines() if ln.strip()]
    # pytest's long repr ends with the error line ("E   AssertionError: ..."): the most telling one.
    errors = [ln for ln in lines if ln.startswith("E ")]
    return (errors[0][1:].strip() if errors else lines[-1].strip() if lines else "")[:200]


def _rows(results: list[TestResult]):
    """(result, detail text) worst outcome first: the failure's error line, the waive, the metrics."""
    for r in sorted(results, key=lambda r: ORDER.index(r.outcome) if r.outcome in ORDER else 0):
        parts = [_first_line(r)] if r.failed else []
        parts += [f"waived {r.waive}"] if r.waive else []
        parts += [_metrics(r)] if r.metrics else []
        yield r, "; ".join(parts)


def render_rich(results: list[TestResult], comparison: dict | None, console: Console) -> None:
    table = Table(title="trtx results", show_lines=False)
    for col in ("outcome", "test", "time", "metrics / message"):
        table.add_column(col, overflow="fold")
    for r, detail in _rows(results):
        table.add_row(f"[{STYLES.get(r.outcome, '')}]{r.outcome}[/]", escape(r.nodeid), f"{r.duration:.1f}s",
                      escape(detail))
    console.print(table)
    s = summary(results)
    console.print("  ".join(f"{k}: {v}" for k, v in s.items() if v or k == "total"))
    if comparison:
        _render_comparison_rich(comparison, console)


def _render_comparison_rich(c: dict, console: Console) -> None:
    console.print(f"[bold]against baseline:[/] {len(c['new_failures'])} new failures, {len(c['fixed'])} fixed")
    for t in c["new_failures"]:
        console.print(f"  [red]new failure[/] {escape(t)}")
    for t in c["fixed"]:
        console.print(f"  [green]fixed[/] {escape(t)}")
    for d in c["metric_deltas"]:
        console.print(f"  {escape(d['test'])} {d['metric']}: {_fmt(d['baseline'])} -> {_fmt(d['value'])} ({d['delta']:+.4g})")


def render_markdown(results: list[TestResult], comparison: dict | None) -> str:
    s = summary(results)
    verdict = "❌ failed" if s["failed"] or s["error"] else "✅ passed"
    out = [f"## trtx: {verdict}", "",
           " · ".join(f"**{k}** {v}" for k, v in s.items() if v or k == "total"), "",
           "| | test | time | metrics / message |", "|---|---|---|---|"]
    for r, detail in _rows(results):
        cell = detail.replace("|", "\\|")
        out.append(f"| {ICONS.get(r.outcome, '')} {r.outcome} | `{r.nodeid}` | {r.duration:.1f}s | {cell} |")
    if comparison:
        out += ["", "### Against baseline", "",
                f"{len(comparison['new_failures'])} new failures, {len(comparison['fixed'])} fixed", ""]
        out += [f"- ❌ new failure: `{t}`" for t in comparison["new_failures"]]
        out += [f"- ✅ fixed: `{t}`" for t in comparison["fixed"]]
        if comparison["metric_deltas"]:
            out += ["", "| test | metric | baseline | now | delta |", "|---|---|---|---|---|"]
            out += [f"| `{d['test']}` | {d['metric']} | {_fmt(d['baseline'])} | {_fmt(d['value'])} | {d['delta']:+.4g} |"
                    for d in comparison["metric_deltas"]]
    return "\n".join(out) + "\n"


def render_json(results: list[TestResult], comparison: dict | None) -> str:
    doc = {"summary": summary(results), "tests": [asdict(r) for r in results]}
    if comparison:
        doc["baseline"] = comparison
    return json.dumps(doc, indent=2)
