"""Running a resolved test list: split it into pytest child processes, watch them, show progress.

Consecutive plain entries share one pytest process; an ISOLATION entry, or one with raw pytest
arguments (`-k "expr"`), gets a process of its own. Processes run one after another, so the list
order holds. Each child gets a plan (entries, timeouts, waives) for the plugin in
cli/pytest_plugin.py, writes its log under RESULTS/logs/, and dies with the harness (Linux
PDEATHSIG) so that nothing outlives `trtx run`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from .report import STYLES
from .rank_entry import die_with_parent
from .results import RESULTS_FILE, TestResult, append_event, read_events, results_from_events, write_junit
from .testdb import TestEntry
from .waives import WaiveFile

WATCHDOG_SLACK_S = 60        # beyond the largest per-test timeout, before a silent child is killed


@dataclass
class Planned:
    entry: TestEntry
    timeout_s: int
    waive: dict | None

    def to_json(self) -> dict:
        return {"entry": str(self.entry.ref), "test_id": self.entry.ref.test_id,
                "timeout_s": self.timeout_s, "waive": self.waive}


def plan(entries: list[TestEntry], waives: WaiveFile, info: dict, default_timeout_min: float) -> list[Planned]:
    out = []
    for e in entries:
        applying = waives.matching(e.ref, info)
        timeout_min = e.timeout_min or default_timeout_min
        waive = None
        for w in applying:
            if w.marker == "TIMEOUT":
                timeout_min = w.timeout_min
            elif waive is None:
                waive = {"marker": w.marker, "reason": w.reason or ""}
        out.append(Planned(e, int(timeout_min * 60), waive))
    return out


def segments(planned: list[Planned]) -> list[list[Planned]]:
    out: list[list[Planned]] = []
    for p in planned:
        alone = p.entry.isolation or bool(p.entry.ref.pytest_args)
        if alone or not out or out[-1][0].entry.isolation or out[-1][0].entry.ref.pytest_args:
            out.append([p])
        else:
            out[-1].append(p)
    return out


def shard(entries: list[TestEntry], k: int, n: int, durations: dict[str, float]) -> list[TestEntry]:
    """Entries of shard k (1-based) of n: longest recorded durations first onto the least loaded
    shard; by count (round robin) when no durations are recorded. List order is kept."""
    if not durations:
        return [e for i, e in enumerate(entries) if i % n == k - 1]
    known = [d for d in durations.values() if d > 0]
    default = sum(known) / len(known) if known else 1.0
    loads, owner = [0.0] * n, {}
    for i in sorted(range(len(entries)), key=lambda i: -durations.get(str(entries[i].ref), default)):
        s = loads.index(min(loads))
        owner[i] = s
        loads[s] += durations.get(str(entries[i].ref), default)
    return [e for i, e in enumerate(entries) if owner[i] == k - 1]



class Runner:
    def __init__(self, test_root: Path, results_dir: Path, junit: Path, user_k: str | None, console: Console):
        self.root, self.dir, self.junit, self.user_k, self.console = test_root, results_dir, junit, user_k, console
        self.results = results_dir / RESULTS_FILE
        (results_dir / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, planned: list[Planned]) -> list[TestResult]:
        groups = segments(planned)
        live = Live(self._view(0, len(groups)), console=self.console, refresh_per_second=4,
                    transient=True) if self.console.is_terminal else None
        printed = 0
        if live:
            live.start()
        try:
            for i, group in enumerate(groups):
                proc = self._spawn(i, group)
                last_event, seen = time.monotonic(), len(read_events(self.results))
                limit = max(p.timeout_s for p in group) + WATCHDOG_SLACK_S
                while proc.poll() is None:
                    time.sleep(0.2)
                    events = read_events(self.results)
                    if len(events) != seen:
                        last_event, seen = time.monotonic(), len(events)
                    if time.monotonic() - last_event > limit:
                        self._kill(proc, limit, events)
                    if live:
                        live.update(self._view(i, len(groups)))
                    else:
                        printed = self._print_finished(printed)
                if proc.returncode not in (0, 1, 5):     # 1: some test failed; 5: none collected
                    self._record_crash(proc.returncode, i, group)
        finally:
            if live:
                live.stop()
        if not live:
            self._print_finished(printed)
        results = results_from_events(read_events(self.results))
        write_junit(results, self.junit)
        return results

    def _spawn(self, index: int, group: list[Planned]) -> subprocess.Popen:
        plan_path = self.dir / "logs" / f"plan-{index}.json"
        plan_path.write_text(json.dumps({"results": str(self.results.resolve()), "junit": str(self.junit.resolve()),
                                         "entries": [p.to_json() for p in group]}))
        args = []
        for p in group:          # an entry with raw pytest args is always alone in its group
            args += [p.entry.ref.test_id, *p.entry.ref.pytest_args]
        args = _with_user_k(args, self.user_k)
        cmd = [sys.executable, "-m", "pytest", "-p", "trtx.cli.pytest_plugin", f"--trtx-plan={plan_path}",
               f"--rootdir={self.root}", f"--confcutdir={self.root}", "-p", "no:cacheprovider", "-q", *args]
        log = open(self.dir / "logs" / f"pytest-{index}.log", "w")
        with log:
            return subprocess.Popen(cmd, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=die_with_parent, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def _kill(self, proc: subprocess.Popen, limit: float, events: list[dict]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        running = [r for r in results_from_events(events, running_ok=True) if r.outcome == "running"]
        for r in running:
            append_event(self.results, {"event": "finish", "nodeid": r.nodeid, "entry": r.entry, "outcome": "error",
                                        "message": f"killed by trtx: no progress for {limit:.0f} s "
                                                   "(past its timeout, and the timeout could not interrupt it)"})

    def _record_crash(self, code: int, index: int, group: list[Planned]) -> None:
        """pytest itself failed (a collection or usage error): one error result per entry it did not report."""
        done = {e["entry"] for e in read_events(self.results)}
        log = (self.dir / "logs" / f"pytest-{index}.log").read_text()[-3000:]
        for p in group:
            if str(p.entry.ref) not in done:
                append_event(self.results, {"event": "finish", "nodeid": str(p.entry.ref), "entry": str(p.entry.ref),
                                            "outcome": "error", "message": f"pytest exited with {code}:\n{log}"})

    def _print_finished(self, printed: int) -> int:
        finished = [e for e in read_events(self.results) if e["event"] == "finish"]
        for e in finished[printed:]:
            style = STYLES.get(e["outcome"], "")
            self.console.print(f"[{style}]{e['outcome'].upper():8}[/] {escape(e['nodeid'])} ({e.get('duration', 0):.1f}s)",
                               highlight=False)
        return len(finished)

    def _view(self, index: int, total: int) -> Table:
        results = results_from_events(read_events(self.results), running_ok=True)
        counts = {}
        for r in results:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        table = Table.grid(padding=(0, 2))
        summary = "  ".join(f"[{STYLES.get(k, '')}]{k} {v}[/]" for k, v in sorted(counts.items()) if k != "running")
        table.add_row(f"[bold]trtx run[/] process {index + 1}/{total}", summary)
        for r in results:
            if r.outcome == "running":
                table.add_row("[blue]running[/]", escape(r.nodeid))
        return table


def _with_user_k(args: list[str], user_k: str | None) -> list[str]:
    """An entry's own `-k EXPR` and the user's `-k` both apply: `-k "(EXPR) and (USER)"`."""
    if not user_k:
        return args
    if "-k" not in args:
        return args + ["-k", user_k]
    i = args.index("-k")
    return args[:i] + ["-k", f"({args[i + 1]}) and ({user_k})"] + args[i + 2:]
