"""Rendering results: a rich table for terminals (one line per test elsewhere, e.g. a CI log),
Markdown for CI step summaries, JSON for machines; merging the shards of a run; and comparing a
run against a baseline run."""
from __future__ import annotations

import io
import json
from dataclasses import asdict

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .results import FAILING, TestResult, headline, junit_xml

ORDER = ("failed", "error", "xpassed", "passed", "xfailed", "skipped")
STYLES = {"passed": "green", "failed": "bold red", "error": "bold red", "skipped": "yellow",
          "xfailed": "yellow", "xpassed": "cyan", "running": "blue"}
ICONS = {"passed": "✅", "failed": "❌", "error": "💥", "skipped": "⏭️", "xfailed": "⚠️", "xpassed": "❓"}


def summary(results: list[TestResult]) -> dict:
    counts = {k: 0 for k in ORDER}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    counts["waived"] = sum(r.waive is not None for r in results)
    counts["flaky"] = sum(r.flaky for r in results)
    counts["total"] = len(results)
    return counts


_PARTS = ("waived", "flaky")         # counted under their outcomes too


def counts_line(s: dict, form: str, sep: str) -> str:
    """The non-zero outcome counts, then the total with the waived and flaky tests as parts of it
    (`total: 3 (1 waived, 1 flaky)`): they are counted under their outcomes too."""
    outcomes = [form.format(k=k, v=v) for k, v in s.items() if v and k not in (*_PARTS, "total")]
    parts = ", ".join(f"{s[k]} {k}" for k in _PARTS if s.get(k))
    return sep.join(outcomes + [form.format(k="total", v=s["total"]) + (f" ({parts})" if parts else "")])


def retries(r: TestResult) -> str:
    """`flaky: attempt 1 error (infra): HEADLINE` for a test that failed before it passed, or
    `failed 3 attempts` for one that failed every time; '' for a test run once."""
    if not r.attempts:
        return ""
    if r.flaky:
        first = next(a for a in r.attempts if a["outcome"] in FAILING)
        kind = f" ({first['failure']})" if first.get("failure") else ""
        return f"flaky: attempt {r.attempts.index(first) + 1} {first['outcome']}{kind}: " + headline(first["message"])
    return f"{r.outcome} {len(r.attempts) + 1} attempts"


def merge_shards(shards: list[list[TestResult]]) -> tuple[list[TestResult], list[str]]:
    """The shards of one run as one list, in shard order, and the node ids found in more than one.
    Such a test (a shard run twice, overlapping shards) is kept once, with its worst outcome in
    ORDER (failed first), so that a merge never hides a failure."""
    merged: dict[str, TestResult] = {}
    repeated = []
    for results in shards:
        for r in results:
            kept = merged.get(r.nodeid)
            if kept is None:
                merged[r.nodeid] = r
                continue
            repeated.append(r.nodeid)
            if _rank(r) < _rank(kept):
                merged[r.nodeid] = r
    return list(merged.values()), list(dict.fromkeys(repeated))


def _rank(r: TestResult) -> int:
    return ORDER.index(r.outcome) if r.outcome in ORDER else 0


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


def number_text(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _metrics(r: TestResult) -> str:
    return ", ".join(f"{k}={number_text(v)}" for k, v in r.metrics.items())


def gates(metrics: dict) -> list[tuple[str, str]]:
    """(metric, its threshold's name) for each metric recorded beside its gate's threshold: M with
    M_threshold or M_floor, and a rate STEM_rate also with STEM_threshold or STEM_floor (cli/eval/gate.py
    as_metrics: accuracy with accuracy_threshold, acceptance_rate with acceptance_threshold)."""
    out = []
    for name, value in metrics.items():
        stems = [name] + ([name.removesuffix("_rate")] if name.endswith("_rate") else [])
        names = [f"{stem}_{kind}" for stem in stems for kind in ("threshold", "floor")]
        limit = next((k for k in names if k in metrics), None)
        if limit and _number(value) and _number(metrics[limit]):
            out.append((name, limit))
    return out


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def result_line(r: TestResult, all_metrics: bool = False) -> Text:
    """A test on one line, for logs: outcome, test, duration, then its error line, its waive, each
    gated metric against its threshold and, with `all_metrics`, the other metrics."""
    m = r.metrics
    parts = [r.headline] if r.failed else []
    parts += [retries(r)] if r.attempts else []
    parts += [f"waived {r.waive}"] if r.waive else []
    parts += [f"{k} {number_text(m[k])} {'>=' if m[k] >= m[limit] else '<'} {number_text(m[limit])}"
              for k, limit in gates(m)]
    if all_metrics:
        shown = {name for pair in gates(m) for name in pair}
        parts += [f"{k}={number_text(v)}" for k, v in m.items() if k not in shown]
    detail = ": " + "; ".join(parts) if parts else ""
    return Text.assemble((f"{r.outcome.upper():8}", STYLES.get(r.outcome, "")),
                         f" {r.nodeid} ({r.duration:.1f}s){detail}")


def _rows(results: list[TestResult]):
    """(result, detail text) worst outcome first: the failure's error line, the waive, the metrics."""
    for r in sorted(results, key=_rank):
        parts = [r.headline] if r.failed else []
        parts += [retries(r)] if r.attempts else []
        parts += [f"waived {r.waive}"] if r.waive else []
        parts += [_metrics(r)] if r.metrics else []
        yield r, "; ".join(parts)


def render_rich(results: list[TestResult], comparison: dict | None, console: Console) -> None:
    """A table in a terminal; elsewhere (a CI log, a file) one unwrapped line per test, worst
    first, so that no test id is ever folded."""
    soft_wrap = not console.is_terminal
    if console.is_terminal:
        table = Table(title="trtx results", show_lines=False)
        for col in ("outcome", "test", "time", "metrics / message"):
            table.add_column(col, overflow="fold")
        for r, detail in _rows(results):
            flaky = " [magenta](flaky)[/]" if r.flaky else ""
            table.add_row(f"[{STYLES.get(r.outcome, '')}]{r.outcome}[/]{flaky}", escape(r.nodeid), f"{r.duration:.1f}s",
                          escape(detail))
        console.print(table)
    else:
        console.print("trtx results:", soft_wrap=True)
        for r, _ in _rows(results):
            console.print(result_line(r, all_metrics=True), soft_wrap=True, highlight=False)
    s = summary(results)
    console.print(counts_line(s, "{k}: {v}", "  "), soft_wrap=soft_wrap)
    if comparison:
        _render_comparison_rich(comparison, console, soft_wrap)


def _render_comparison_rich(c: dict, console: Console, soft_wrap: bool) -> None:
    lines = [f"[bold]against baseline:[/] {len(c['new_failures'])} new failures, {len(c['fixed'])} fixed"]
    lines += [f"  [red]new failure[/] {escape(t)}" for t in c["new_failures"]]
    lines += [f"  [green]fixed[/] {escape(t)}" for t in c["fixed"]]
    lines += [f"  {escape(d['test'])} {d['metric']}: {number_text(d['baseline'])} -> {number_text(d['value'])} "
              f"({d['delta']:+.4g})" for d in c["metric_deltas"]]
    for line in lines:
        console.print(line, soft_wrap=soft_wrap, highlight=False)


def md_code(text: str) -> str:
    """`text` as a Markdown code span: one with a backtick inside takes a longer fence."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def md_cell(text: str) -> str:
    """Text for a Markdown table cell: a `|` would start a new cell (GitHub reads `\\|` inside code too)."""
    return text.replace("|", "\\|")


def render_markdown(results: list[TestResult], comparison: dict | None, title: str = "trtx") -> str:
    s = summary(results)
    verdict = "❌ failed" if s["failed"] or s["error"] else "✅ passed"
    out = [f"## {title}: {verdict}", "",
           counts_line(s, "**{k}** {v}", " · "), "",
           "| | test | time | metrics / message |", "|---|---|---|---|"]
    for r, detail in _rows(results):
        label = f"{ICONS.get(r.outcome, '')} {r.outcome}" + (" 🔁 flaky" if r.flaky else "")
        out.append(f"| {label} | {md_cell(md_code(r.nodeid))} | {r.duration:.1f}s | {md_cell(detail)} |")
    if comparison:
        out += ["", "### Against baseline", "",
                f"{len(comparison['new_failures'])} new failures, {len(comparison['fixed'])} fixed", ""]
        out += [f"- ❌ new failure: {md_code(t)}" for t in comparison["new_failures"]]
        out += [f"- ✅ fixed: {md_code(t)}" for t in comparison["fixed"]]
        if comparison["metric_deltas"]:
            out += ["", "| test | metric | baseline | now | delta |", "|---|---|---|---|---|"]
            out += [f"| {md_cell(md_code(d['test']))} | {md_cell(d['metric'])} | {number_text(d['baseline'])} | "
                    f"{number_text(d['value'])} | {d['delta']:+.4g} |"
                    for d in comparison["metric_deltas"]]
    return "\n".join(out) + "\n"


def render_json(results: list[TestResult], comparison: dict | None) -> str:
    doc = {"summary": summary(results), "tests": [{**asdict(r), "flaky": r.flaky} for r in results]}
    if comparison:
        doc["baseline"] = comparison
    return json.dumps(doc, indent=2)


def rendered(fmt: str, results: list[TestResult], comparison: dict | None) -> str:
    """The report as text in `fmt` (rich, markdown, json, junit), for a file: rich gives the plain
    lines, as in a CI log."""
    if fmt == "rich":
        text = io.StringIO()
        render_rich(results, comparison, Console(file=text))
        return text.getvalue()
    if fmt == "junit":
        return junit_xml(results)
    return render_markdown(results, comparison) if fmt == "markdown" else render_json(results, comparison) + "\n"
