"""Trends over a test list's history (history.py): per test its current streak, flip rate, first
failing run, flaky count and each gated metric's values against its threshold, worst test first;
rendered as a rich table (one unwrapped line per test outside a terminal), Markdown, JSON, or a
self-contained HTML page (inline SVG, no script, nothing fetched). Also the waives that a history
shows to be stale. Each number's definition is in docs/history.md."""
from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import jinja2
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..lists.testline import TestRef, names_entry, parse_ref, waive_covers
from ..lists.waives import Waive
from .history import History, Record, Run
from .report import ICONS, STYLES, gates, md_cell, md_code, number_text
from .results import FAILING, PASSING

# Outcome sparkline: worked high, failed low, the waived and the skipped between.
OUTCOME_BARS = {"passed": "█", "xpassed": "▇", "skipped": "▄", "xfailed": "▂", "failed": "▁", "error": "▁"}
BARS = "▁▂▃▄▅▆▇█"
COLOURS = {"passed": "#2a9d3a", "xpassed": "#1b9aaa", "skipped": "#c9a227", "xfailed": "#e08a1e",
           "failed": "#d43c3c", "error": "#8e1b1b"}


@dataclass(frozen=True)
class Point:
    run: int
    value: float
    threshold: float

    @property
    def passing(self) -> bool:
        return self.value >= self.threshold


@dataclass
class MetricTrend:
    metric: str
    threshold_name: str
    points: list[Point]           # the window's runs that recorded it, oldest first

    @property
    def last(self) -> Point:
        return self.points[-1]


@dataclass
class TestTrend:
    __test__ = False              # a data type, not a pytest test class
    nodeid: str
    records: list[Record]         # its results in the window, oldest first
    streak_outcome: str           # the latest outcome, and how many runs in a row had it
    streak_length: int
    flips: int                    # changes between worked and did not, between consecutive runs it ran in
    pairs: int                    # such consecutive pairs in the window
    first_failing: Run | None     # the first run of the failing streak it is in now
    flaky: int                    # results in the window that failed, then passed on a retry
    metrics: list[MetricTrend]
    # Whether it ran in the latest run of its shard: a test renamed, removed from the list or
    # stopped by a crash before it started has a last result, but is not failing *now*.
    current: bool

    @property
    def latest(self) -> Record:
        return self.records[-1]

    @property
    def failing_now(self) -> bool:
        return self.current and self.latest.outcome in FAILING

    @property
    def flip_rate(self) -> float | None:
        return self.flips / self.pairs if self.pairs else None

    @property
    def unstable(self) -> bool:
        return bool(self.flips or self.flaky)


@dataclass
class Trends:
    path: Path
    context: str
    runs: list[Run]               # the window, oldest first
    total_runs: int
    tests: list[TestTrend]        # worst first

    @property
    def failing_now(self) -> int:
        """How many tests fail now (truthy: the report's exit code is 1)."""
        return sum(t.failing_now for t in self.tests)

    @property
    def unstable(self) -> int:
        """How many tests flipped or were flaky in the window and do not fail now."""
        return sum(t.unstable and not t.failing_now for t in self.tests)


def trends(history: History, last: int = 20) -> Trends:
    """The trends of the tests that ran in the last `last` runs. Streak and first failing run
    look back over the whole history; flip rate, flaky count and metric series over the window."""
    window = list(history.runs.values())[-last:]
    first = window[0].number if window else 0
    latest_of_shard = {run.shard: run.number for run in history.runs.values()}      # runs ascend: the last wins
    tests = [_trend(nodeid, records, first, history, latest_of_shard) for nodeid, records in history.tests.items()
             if records[-1].run >= first]
    tests.sort(key=lambda t: (0 if t.failing_now else 1 if t.unstable else 2, -(t.flip_rate or 0), -t.flaky,
                              t.nodeid))
    return Trends(history.path, history.context, window, len(history.runs), tests)


def _trend(nodeid: str, records: list[Record], first: int, history: History,
           latest_of_shard: dict[str | None, int]) -> TestTrend:
    in_window = [r for r in records if r.run >= first]
    latest = records[-1].outcome
    streak = next((i for i, r in enumerate(reversed(records)) if r.outcome != latest), len(records))
    failing = next((i for i, r in enumerate(reversed(records)) if r.outcome not in FAILING), len(records))
    first_failing = history.runs[records[-failing].run] if failing else None
    worked = [r.outcome in PASSING for r in in_window if r.outcome != "skipped"]
    flips = sum(a != b for a, b in zip(worked, worked[1:]))
    current = records[-1].run == latest_of_shard[history.runs[records[-1].run].shard]
    return TestTrend(nodeid, in_window, latest, streak, flips, max(len(worked) - 1, 0), first_failing,
                     sum(r.flaky for r in in_window), _metric_trends(in_window), current)


def _metric_trends(records: list[Record]) -> list[MetricTrend]:
    by_metric: dict[str, MetricTrend] = {}
    for r in records:
        for metric, limit in gates(r.metrics):
            trend = by_metric.setdefault(metric, MetricTrend(metric, limit, []))
            trend.points.append(Point(r.run, r.metrics[metric], r.metrics[limit]))
    return list(by_metric.values())


# -- stale waives -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stale:
    waive: Waive
    nodeid: str
    first_run: int                # the K runs it passed, first and last
    last_run: int


def stale_waives(history: History, waives: list[Waive], last: int) -> tuple[list[Stale], list[Waive]]:
    """The tests whose waive is stale: each passed (or xpassed) its last `last` runs in which it
    ran (not skipped) under this waive, and so did every other test of the same waive that ran
    at all. Only runs in which the waive applied count (the result carries its label: an XFAIL
    waive, or `trtx run --run-waived`): a pass from before the test was waived, or on another
    platform, says nothing about the waive. Also the waives none of whose tests ran under them
    in the history (`trtx run --run-waived` would run them). TIMEOUT entries waive nothing and
    are left out."""
    stale, never_ran = [], []
    for w in waives:
        if w.marker == "TIMEOUT":
            continue
        ran: dict[str, list[Record]] = {}
        for nodeid, records in history.tests.items():
            counted = [r for r in records if r.outcome != "skipped" and r.waive == w.label]
            if counted and _inside(records[-1], w.ref):
                ran[nodeid] = counted
        if not ran:
            never_ran.append(w)
            continue
        passed = {nodeid: records[-last:] for nodeid, records in ran.items()
                  if len(records) >= last and all(r.outcome in PASSING for r in records[-last:])}
        if len(passed) == len(ran):
            stale += [Stale(w, nodeid, kept[0].run, kept[-1].run) for nodeid, kept in passed.items()]
    return stale, never_ran


def _inside(record: Record, ref: TestRef) -> bool:
    """Whether the waive `ref` covers the test as `trtx run` applies it: a waive with pytest
    arguments covers its entry's tests (the same id and arguments); one without covers the tests of
    the entry it names and those under the file, class or function it names."""
    try:
        entry = parse_ref(record.entry)
    except ValueError:
        entry = None
    if entry is not None and names_entry(ref, entry):
        return True
    return not ref.pytest_args and waive_covers(record.nodeid, ref.test_id)


# -- text ---------------------------------------------------------------------------------------

def _when(run: Run) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(run.started))


def _span(t: Trends) -> str:
    if not t.runs:
        return "no runs recorded"
    return f"runs #{t.runs[0].number}-#{t.runs[-1].number} ({len(t.runs)} of {t.total_runs})"


def streak_text(t: TestTrend) -> str:
    return f"{t.streak_outcome} x{t.streak_length}" + ("" if t.current else f", not run since run #{t.latest.run}")


def flip_text(t: TestTrend) -> str:
    return f"{t.flip_rate:.2f} ({t.flips} of {t.pairs})" if t.pairs else "-"


def first_failing_text(t: TestTrend) -> str:
    run = t.first_failing
    if run is None:
        return ""
    return f"run #{run.number} ({_when(run)}" + (f", {run.label})" if run.label else ")")


def outcome_spark(records: list[Record]) -> str:
    return "".join(OUTCOME_BARS.get(r.outcome, "?") for r in records)


def metric_spark(points: list[Point]) -> str:
    """The values scaled from the window's lowest (▁) to its highest (█); all equal: ▄."""
    values = [p.value for p in points]
    low, high = min(values), max(values)
    if high == low:
        return BARS[3] * len(values)
    return "".join(BARS[round((v - low) / (high - low) * (len(BARS) - 1))] for v in values)


def verdict_text(m: MetricTrend) -> str:
    """`91.2 >= 84.3 (+6.9)`: the last value against its threshold, and the margin."""
    p = m.last
    return f"{number_text(p.value)} {'>=' if p.passing else '<'} {number_text(p.threshold)} ({p.value - p.threshold:+.4g})"


def metric_text(m: MetricTrend) -> str:
    return f"{m.metric} {verdict_text(m)}"


def _counts(t: Trends) -> str:
    return f"failing now: {t.failing_now}  flipping or flaky: {t.unstable}  tests: {len(t.tests)}  {_span(t)}"


def _spark_text(chars: str, styles: list[str]) -> Text:
    return Text.assemble(*((c, s) for c, s in zip(chars, styles)))


def _outcome_cell(t: TestTrend) -> Text:
    return _spark_text(outcome_spark(t.records), [STYLES.get(r.outcome, "") for r in t.records])


def _metric_cell(m: MetricTrend) -> Text:
    spark = _spark_text(metric_spark(m.points), ["green" if p.passing else "bold red" for p in m.points])
    return Text.assemble(f"{m.metric} ", spark, f" {verdict_text(m)}")


def _line(t: TestTrend) -> Text:
    """A test on one line, for CI logs: its latest outcome, then what the table's columns say."""
    since = f" since {first_failing_text(t)}" if t.first_failing else ""
    head = [f"{streak_text(t)}{since}"] + ([t.latest.headline] if t.failing_now and t.latest.headline else [])
    parts: list[str | Text] = ["; ".join(head) + "; outcomes ", _outcome_cell(t), f"; flip rate {flip_text(t)}"]
    parts += [f"; flaky {t.flaky}"] if t.flaky else []
    for m in t.metrics:
        parts += ["; ", _metric_cell(m)]
    return Text.assemble((f"{t.latest.outcome.upper():8}", STYLES.get(t.latest.outcome, "")), f" {t.nodeid}: ",
                         *parts)


def render_rich(t: Trends, console: Console) -> None:
    """A table in a terminal; elsewhere (a CI log, a file) one unwrapped line per test."""
    header = f"trtx history of {t.context}: {_span(t)} in {t.path}"
    if console.is_terminal:
        table = Table(title=escape(header), caption="outcomes: █ passed ▇ xpassed ▄ skipped ▂ xfailed ▁ failed/error")
        for col in ("test", "now", "outcomes", "flip rate", "flaky", "first failing", "gated metrics"):
            table.add_column(col, overflow="fold")
        for x in t.tests:
            table.add_row(escape(x.nodeid), Text(streak_text(x), STYLES.get(x.latest.outcome, "")), _outcome_cell(x),
                          flip_text(x), str(x.flaky or ""), escape(first_failing_text(x)),
                          Text("\n").join(_metric_cell(m) for m in x.metrics))
        console.print(table)
    else:
        console.print(f"{header}, worst first:", soft_wrap=True, highlight=False, markup=False)
        for x in t.tests:
            console.print(_line(x), soft_wrap=True, highlight=False)
    console.print(_counts(t), soft_wrap=not console.is_terminal, highlight=False, markup=False)


def render_markdown(t: Trends) -> str:
    verdict = f"❌ {t.failing_now} failing now" if t.failing_now else "✅ nothing failing now"
    out = [f"## trtx history of {t.context}: {verdict}", "", _counts(t).replace("  ", " · "), "",
           "| | test | now | outcomes | flip rate | flaky | first failing | gated metrics |",
           "|---|---|---|---|---|---|---|---|"]
    for x in t.tests:
        metrics = "<br>".join(f"{m.metric} {metric_spark(m.points)} {verdict_text(m)}"
                              for m in x.metrics)
        cells = [ICONS.get(x.latest.outcome, ""), md_code(x.nodeid), streak_text(x), outcome_spark(x.records),
                 flip_text(x), str(x.flaky or ""), first_failing_text(x), metrics]
        out.append("| " + " | ".join(map(md_cell, cells)) + " |")
    out += ["", "outcomes: █ passed ▇ xpassed ▄ skipped ▂ xfailed ▁ failed or error, oldest first"]
    return "\n".join(out) + "\n"


def _run_json(run: Run | None) -> dict | None:
    return None if run is None else {"run": run.number, "time": run.started, "label": run.label}


def as_json(t: Trends) -> dict:
    return {
        "history": {"path": str(t.path), "context": t.context, "runs": t.total_runs, "window": len(t.runs),
                    "first_run": t.runs[0].number if t.runs else None,
                    "last_run": t.runs[-1].number if t.runs else None},
        "summary": {"tests": len(t.tests), "failing_now": t.failing_now, "flipping_or_flaky": t.unstable},
        "tests": [{
            "nodeid": x.nodeid, "outcome": x.latest.outcome, "headline": x.latest.headline,
            "streak": {"outcome": x.streak_outcome, "length": x.streak_length},
            "flip_rate": x.flip_rate, "flips": x.flips, "pairs": x.pairs, "flaky": x.flaky,
            "first_failing": _run_json(x.first_failing),
            "outcomes": [{"run": r.run, "outcome": r.outcome} for r in x.records],
            "metrics": [{"metric": m.metric, "threshold_name": m.threshold_name,
                         "last": m.last.value, "threshold": m.last.threshold,
                         "margin": m.last.value - m.last.threshold, "passing": m.last.passing,
                         "points": [{"run": p.run, "value": p.value, "threshold": p.threshold} for p in m.points]}
                        for m in x.metrics],
        } for x in t.tests]}


# -- HTML ---------------------------------------------------------------------------------------

SQUARE, GAP = 12, 3
CHART_W, CHART_H, LEFT, RIGHT, TOP, BOTTOM = 360, 110, 46, 10, 10, 18

HTML = jinja2.Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>trtx history of {{ context }}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 20px; } .summary { color: #555; }
section { border: 1px solid #ddd; border-left: 6px solid #2a9d3a; border-radius: 6px; padding: .6em 1em; margin: 1em 0; }
section.failing { border-left-color: #d43c3c; } section.unstable { border-left-color: #e0a21e; }
h2 { font: 600 14px monospace; margin: 0 0 .3em; word-break: break-all; }
.facts span { margin-right: 1.4em; } .headline { color: #a22; font-family: monospace; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; } figure { margin: .4em 0; }
figcaption { font-size: 13px; } svg text { font: 10px sans-serif; fill: #666; }
.values { fill: none; stroke: #3b6fb6; stroke-width: 1.5; }
.threshold { fill: none; stroke: #888; stroke-width: 1.2; stroke-dasharray: 5 4; }
.pass { fill: #3b6fb6; } .fail { fill: #d43c3c; } .axis { stroke: #ccc; }
{% for outcome, colour in colours.items() %}.{{ outcome }} { fill: {{ colour }}; }
{% endfor %}</style></head><body>
<h1>trtx history of {{ context }}</h1>
<p class="summary">{{ summary }}<br>{{ path }}</p>
<p class="summary">{% for outcome in colours %}<svg width="{{ square }}" height="{{ square }}"><rect width="{{ square }}" height="{{ square }}" rx="2" class="{{ outcome }}"/></svg> {{ outcome }} &nbsp; {% endfor %}(one square per run, oldest first; dashed: the threshold)</p>
{% for t in tests %}<section class="{{ t.state }}">
<h2>{{ t.nodeid }}</h2>
<p class="facts"><span><b>{{ t.streak }}</b></span>{% if t.first_failing %}<span>failing since {{ t.first_failing }}</span>{% endif %}<span>flip rate {{ t.flip }}</span>{% if t.flaky %}<span>flaky {{ t.flaky }}</span>{% endif %}</p>
{% if t.headline %}<p class="headline">{{ t.headline }}</p>{% endif %}
<svg width="{{ t.strip_width }}" height="{{ square }}" role="img" aria-label="outcomes, oldest first">
{% for s in t.strip %}<rect x="{{ s.x }}" y="0" width="{{ square }}" height="{{ square }}" rx="2" class="{{ s.outcome }}"><title>{{ s.title }}</title></rect>
{% endfor %}</svg>
<div class="charts">{% for c in t.charts %}<figure><figcaption>{{ c.caption }}</figcaption>
<svg width="{{ width }}" height="{{ height }}" role="img" aria-label="{{ c.caption }}">
<line class="axis" x1="{{ left }}" y1="{{ top }}" x2="{{ left }}" y2="{{ height - bottom }}"/>
<text x="{{ left - 4 }}" y="{{ top + 4 }}" text-anchor="end">{{ c.high }}</text>
<text x="{{ left - 4 }}" y="{{ height - bottom }}" text-anchor="end">{{ c.low }}</text>
<text x="{{ left }}" y="{{ height - 4 }}">#{{ c.first_run }}</text>
<text x="{{ width - right }}" y="{{ height - 4 }}" text-anchor="end">#{{ c.last_run }}</text>
<polyline class="threshold" points="{{ c.threshold }}"><title>{{ c.threshold_name }}</title></polyline>
<polyline class="values" points="{{ c.line }}"/>
{% for p in c.points %}<circle cx="{{ p.x }}" cy="{{ p.y }}" r="3.5" class="{{ 'pass' if p.passing else 'fail' }}"><title>{{ p.title }}</title></circle>
{% endfor %}</svg></figure>{% endfor %}</div>
</section>
{% endfor %}</body></html>
""", autoescape=True, undefined=jinja2.StrictUndefined)


def _chart(m: MetricTrend) -> dict:
    """A metric's line chart: its values, its threshold dashed, points below it red. The scale
    spans both, so that the threshold is always in view."""
    values = [v for p in m.points for v in (p.value, p.threshold)]
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or abs(high) * 0.05 or 1.0
    low, high = low - pad, high + pad
    inner_w, inner_h = CHART_W - LEFT - RIGHT, CHART_H - TOP - BOTTOM
    step = inner_w / max(len(m.points) - 1, 1)

    def x(i: int) -> float:
        return round(LEFT + (i * step if len(m.points) > 1 else inner_w / 2), 1)

    def y(v: float) -> float:
        return round(TOP + (high - v) / (high - low) * inner_h, 1)

    return {"caption": metric_text(m), "threshold_name": m.threshold_name, "high": number_text(high), "low": number_text(low),
            "first_run": m.points[0].run, "last_run": m.last.run,
            "line": " ".join(f"{x(i)},{y(p.value)}" for i, p in enumerate(m.points)),
            "threshold": " ".join(f"{x(i)},{y(p.threshold)}" for i, p in enumerate(m.points)),
            "points": [{"x": x(i), "y": y(p.value), "passing": p.passing,
                        "title": f"#{p.run}: {m.metric} {number_text(p.value)} {'>=' if p.passing else '<'} "
                                 f"{number_text(p.threshold)}"} for i, p in enumerate(m.points)]}


def render_html(t: Trends) -> str:
    tests = [{
        "nodeid": x.nodeid, "state": "failing" if x.failing_now else "unstable" if x.unstable else "ok",
        "streak": streak_text(x), "first_failing": first_failing_text(x), "flip": flip_text(x), "flaky": x.flaky,
        "headline": x.latest.headline if x.failing_now else "",
        "strip_width": len(x.records) * (SQUARE + GAP),
        "strip": [{"x": i * (SQUARE + GAP), "outcome": r.outcome,
                   "title": f"#{r.run} {r.outcome}" + (f": {r.headline}" if r.headline else "")}
                  for i, r in enumerate(x.records)],
        "charts": [_chart(m) for m in x.metrics],
    } for x in t.tests]
    return HTML.render(context=t.context, path=str(t.path), summary=_counts(t).replace("  ", " · "), tests=tests,
                       colours=COLOURS, square=SQUARE, width=CHART_W, height=CHART_H, left=LEFT, right=RIGHT,
                       top=TOP, bottom=BOTTOM)


def rendered(fmt: str, t: Trends) -> str:
    """The trends as text in `fmt` (rich, markdown, json, html), for a file: rich gives the plain
    lines, as in a CI log."""
    if fmt == "rich":
        text = io.StringIO()
        render_rich(t, Console(file=text))
        return text.getvalue()
    if fmt == "html":
        return render_html(t)
    return render_markdown(t) if fmt == "markdown" else json.dumps(as_json(t), indent=2) + "\n"
