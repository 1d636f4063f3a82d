"""Running a planned test list (lists/selection.py): split it into pytest child processes, watch
them, show progress.

Consecutive plain entries share one pytest process; an ISOLATION entry, or one with raw pytest
arguments (`-k "expr"`), gets a process of its own. Processes run one after another, so the list
order holds. Each child gets a plan for the plugin in cli/run/pytest_plugin.py: its entries, their
timeouts, and the waives that can apply to each entry's tests (its own, and those naming a test,
class or file inside it or a file, class or function around it), which the plugin applies to each
test it collects. Each child writes its log under RESULTS/logs/, and dies with the harness (Linux
PDEATHSIG) so that nothing outlives `trtx run`. SIGTERM or SIGINT kills the running child, records
its tests as interrupted and ends the run with its report. In a terminal progress is a live view;
elsewhere (a CI log) it is one unwrapped line per test start, end and heartbeat (docs/results.md).

With retries (`trtx run --retries N`), once the list has run, each test whose failure was of the
infrastructure (failures.py; a timeout too with --retry-timeouts) runs again, alone in a pytest
child of its own, up to N times: its events carry the attempt number, each attempt keeps its log
(logs/pytest-retryK-J.log), and a test that passes on a retry is flaky, not failed.
"""
from __future__ import annotations

import contextlib
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
from rich.text import Text

from ..errors import UserError
from ..lists.selection import Planned
from ..procs import die_with_parent
from .failures import ERROR, INFRA, TIMEOUT, classify_log
from .report import STYLES, result_line
from .results import (INTERRUPTED, RESULTS_FILE, TestResult, append_event, drop_torn_tail, read_events,
                      results_from_events, write_junit)

WATCHDOG_SLACK_S = 60        # beyond the largest per-test timeout, before a silent child is killed
HEARTBEAT_S = 30             # without a terminal, a "still running" line this often (TRTX_HEARTBEAT_S)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def segments(planned: list[Planned]) -> list[list[Planned]]:
    out: list[list[Planned]] = []
    for p in planned:
        alone = p.entry.isolation or bool(p.entry.ref.pytest_args)
        if alone or not out or out[-1][0].entry.isolation or out[-1][0].entry.ref.pytest_args:
            out.append([p])
        else:
            out[-1].append(p)
    return out


class Interrupted(Exception):
    """SIGTERM or SIGINT reached `trtx run`: raised in the main loop, which then ends the run."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum, _frame):
    for sig in STOP_SIGNALS:         # a second signal during the wind-down ends trtx at once
        signal.signal(sig, signal.SIG_DFL)
    raise Interrupted(signum)


def _heartbeat_s() -> float:
    value = os.environ.get("TRTX_HEARTBEAT_S", str(HEARTBEAT_S))
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0
    if not seconds > 0:
        raise UserError(f"TRTX_HEARTBEAT_S={value!r}: expected a positive number of seconds")
    return seconds


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}m{int(seconds) % 60:02d}s" if seconds >= 60 else f"{seconds:.0f}s"


@dataclass
class RunOptions:
    """How `trtx run` runs its plan beyond the list itself."""
    retries: int = 0                 # runs again of a test that failed for the infrastructure
    retry_timeouts: bool = False     # a timeout counts as such a failure
    run_waived: bool = False         # SKIP waives run their tests (as XFAIL)

    def retryable(self, result: TestResult) -> bool:
        return result.failed and (result.failure == INFRA or self.retry_timeouts and result.failure == TIMEOUT)


class Runner:
    def __init__(self, test_root: Path, results_dir: Path, junit: Path, user_k: str | None, console: Console,
                 context: str = "", shard: str | None = None, options: RunOptions | None = None,
                 history: Path | None = None):
        self.root, self.dir, self.junit, self.user_k, self.console = test_root, results_dir, junit, user_k, console
        self.options = options or RunOptions()
        self.results = results_dir / RESULTS_FILE
        self.run_start = {"event": "run_start", "context": context, "shard": shard,
                          "history": str(history) if history else None}
        self.heartbeat_s = _heartbeat_s()
        self.interrupted: int | None = None         # the signal that stopped the run
        self._attempt, self._retried, self._log = 1, None, self.dir / "logs" / "pytest-0.log"   # the running child
        self._shown = 0                             # events already logged (no terminal)
        self._running: dict[str, list] = {}         # nodeid -> [start time, heartbeats logged]
        (results_dir / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, planned: list[Planned]) -> list[TestResult]:
        """Run every group, one pytest child at a time. On SIGTERM or SIGINT the child is killed,
        its running tests recorded as interrupted, and the run ends normally (self.interrupted)."""
        groups = segments(planned)
        append_event(self.results, {**self.run_start, "entries": len(planned)})
        write_junit(results_from_events(read_events(self.results)), self.junit)   # red until the run ends
        live = Live(self._view(0, len(groups)), console=self.console, refresh_per_second=4,
                    transient=True) if self.console.is_terminal else None
        previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS}
        proc = None
        try:
            if live:
                live.start()
            for i, group in enumerate(groups):
                proc = self._spawn(str(i), group)
                self._watch(proc, group, live, i, len(groups))
            for attempt in range(2, self.options.retries + 2):
                again = self._to_retry(planned)
                for j, (nodeid, p) in enumerate(again):
                    proc = self._spawn(f"retry{attempt}-{j}", [p], attempt, nodeid)
                    self._watch(proc, [p], live, j, len(again))
        except Interrupted as e:
            self.interrupted = e.signum
            self._stop(proc, f"{INTERRUPTED}{e}")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if live:
                live.stop()
        append_event(self.results, {"event": "run_end",
                                    "interrupted": signal.Signals(self.interrupted).name if self.interrupted else None})
        events = read_events(self.results)
        if not live:
            self._log_new(events)
        results = results_from_events(events)
        write_junit(results, self.junit)
        return results

    def _to_retry(self, planned: list[Planned]) -> list[tuple[str, Planned]]:
        """(node id, its list entry) of each test whose last attempt failed in a way worth a retry;
        the entry is the one its result came from, so that the retry runs with its arguments."""
        entries = {str(p.entry.ref): p for p in planned}
        return [(r.nodeid, entries[r.entry]) for r in results_from_events(read_events(self.results))
                if self.options.retryable(r) and r.entry in entries]

    def _watch(self, proc: subprocess.Popen, group: list[Planned], live: Live | None, index: int, total: int) -> None:
        last_event, seen = time.monotonic(), len(read_events(self.results))
        limit = max(p.longest_timeout_s for p in group) + WATCHDOG_SLACK_S
        while proc.poll() is None:
            time.sleep(0.2)
            events = read_events(self.results)
            if len(events) != seen:
                last_event, seen = time.monotonic(), len(events)
            if time.monotonic() - last_event > limit:
                self._stop(proc, f"killed by trtx: no progress for {limit:.0f} s "
                                 "(past its timeout, and the timeout could not interrupt it)", TIMEOUT)
            if live:
                live.update(self._view(index, total))
            else:
                self._log_new(events)
        if proc.returncode not in (0, 1, 5):     # 1: some test failed; 5: none collected
            self._record_crash(proc.returncode, group)

    def _spawn(self, name: str, group: list[Planned], attempt: int = 1, nodeid: str | None = None) -> subprocess.Popen:
        """A pytest child for `group` (or, retrying, for the one test `nodeid`), logged as `name`.
        Its tests' temporary folders (their rank logs) stay under logs/tmp-NAME: each attempt's kept."""
        plan_path = self.dir / "logs" / f"plan-{name}.json"
        plan_path.write_text(json.dumps({"results": str(self.results.resolve()), "junit": str(self.junit.resolve()),
                                         "attempt": attempt, "run_waived": self.options.run_waived,
                                         "entries": [p.to_json() for p in group]}))
        args = []
        for p in group:          # an entry with raw pytest args is always alone in its group
            args += [p.entry.ref.test_id, *p.entry.ref.pytest_args]
        # A retry runs the one test with its entry's own arguments (its -k, its options), as before.
        args = [nodeid, *group[0].entry.ref.pytest_args] if nodeid else _with_user_k(args, self.user_k)
        cmd = [sys.executable, "-m", "pytest", "-p", "trtx.cli.run.pytest_plugin", f"--trtx-plan={plan_path}",
               f"--rootdir={self.root}", f"--confcutdir={self.root}", f"--basetemp={self.dir / 'logs' / f'tmp-{name}'}",
               "-p", "no:cacheprovider", "-q", *args]
        self._attempt, self._retried, self._log = attempt, nodeid, self.dir / "logs" / f"pytest-{name}.log"
        log = open(self._log, "w")
        with log:
            return subprocess.Popen(cmd, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=die_with_parent, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def _stop(self, proc: subprocess.Popen | None, message: str, failure: str = ERROR) -> None:
        """Kill the pytest child's process group; each test it was running becomes an error."""
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self._fail_running(message, failure)

    def _finish(self, nodeid: str, entry: str, message: str, failure: str, duration: float = 0.0) -> None:
        """A `finish` line trtx writes for a test of the running child, which could not write it."""
        append_event(self.results, {"event": "finish", "nodeid": nodeid, "entry": entry, "outcome": "error",
                                    "duration": duration, "message": message, "failure": failure,
                                    "attempt": self._attempt})

    def _fail_running(self, message: str, failure: str) -> None:
        """Record each test that started and has no finish (its process is gone) as an error."""
        drop_torn_tail(self.results)                # the child may have died mid-line
        events = read_events(self.results)
        started = {e["nodeid"]: e["time"] for e in events if e["event"] == "start"}
        for r in results_from_events(events, running_ok=True):
            if r.outcome == "running":
                self._finish(r.nodeid, r.entry, message, failure, round(time.time() - started[r.nodeid], 3))

    def _record_crash(self, code: int, group: list[Planned]) -> None:
        """pytest itself failed (a crash, a collection or usage error): its running test and each
        entry it did not report (the test it was retrying) become errors."""
        log = self._log.read_text(errors="replace")
        message, failure = f"pytest exited with {code}:\n" + log[-3000:], classify_log(log)
        self._fail_running(message, failure)
        reported = {(e.get("nodeid") if self._retried else e.get("entry")) for e in read_events(self.results)
                    if e.get("attempt", 1) == self._attempt}
        for p in group:          # never started: whatever killed pytest, they ran into no timeout of theirs
            nodeid = self._retried or str(p.entry.ref)
            if nodeid not in reported:
                self._finish(nodeid, str(p.entry.ref), message, ERROR)

    def _log_new(self, events: list[dict]) -> None:
        """Without a terminal (a CI log): one line when a test starts, one when it ends, and one
        every heartbeat_s while it runs; never wrapped, so that each is one grep-able line."""
        for ev in events[self._shown:]:
            if ev["event"] == "start":
                self._running[ev["nodeid"]] = [ev["time"], 0]
                again = f" (attempt {ev['attempt']} of {self.options.retries + 1})" if ev.get("attempt", 1) > 1 else ""
                self._say(Text(f"{'START':8} {ev['nodeid']}{again}"))
            elif ev["event"] == "finish":
                self._running.pop(ev["nodeid"], None)
                self._say(self._finish_line(ev))
        self._shown = len(events)
        for nodeid, beat in self._running.items():
            elapsed = time.time() - beat[0]
            if elapsed // self.heartbeat_s > beat[1]:
                beat[1] = elapsed // self.heartbeat_s
                self._say(Text(f"{'RUNNING':8} {nodeid} (still running, {_clock(elapsed)})"))

    def _finish_line(self, ev: dict) -> Text:
        """A test's end line; a failure that will run again says RETRY, not FAILED, so that a CI
        log's FAILED and ERROR lines are verdicts only."""
        r = results_from_events([ev])[0]
        if self.options.retryable(r) and ev.get("attempt", 1) <= self.options.retries:
            return Text.assemble((f"{'RETRY':8}", "magenta"), f" {r.nodeid} ({r.duration:.1f}s): {r.failure} failure, "
                                 f"runs again once the list has run: {r.headline}")
        return result_line(r)

    def _say(self, line: Text) -> None:
        self.console.print(line, soft_wrap=True, highlight=False)

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
