"""Running a planned test list (lists/selection.py): split it into pytest child processes, watch
them, show progress.

Consecutive plain entries share one pytest process; an ISOLATION entry, or one with raw pytest
arguments (`-k "expr"`), gets a process of its own. Processes run one after another, so the list
order holds. Each child gets a plan for the plugin in cli/run/pytest_plugin.py: its entries, their
timeouts, and the waives that can apply to each entry's tests (its own, and those naming a test
inside it or a folder, file or class around it), which the plugin applies to each test it
collects. Each child writes its log under RESULTS/logs/, and dies with the harness (Linux
PDEATHSIG) so that nothing outlives `trtx run`. SIGTERM or SIGINT kills the running child, records
its tests as interrupted and ends the run with its report. In a terminal progress is a live view;
elsewhere (a CI log) it is one unwrapped line per test start, end and heartbeat (docs/results.md).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..errors import UserError
from ..lists.selection import Planned
from ..procs import die_with_parent
from .report import STYLES, result_line
from .results import (RESULTS_FILE, TestResult, append_event, drop_torn_tail, read_events, results_from_events,
                      write_junit)

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


class Runner:
    def __init__(self, test_root: Path, results_dir: Path, junit: Path, user_k: str | None, console: Console,
                 context: str = "", shard: str | None = None):
        self.root, self.dir, self.junit, self.user_k, self.console = test_root, results_dir, junit, user_k, console
        self.results = results_dir / RESULTS_FILE
        self.run_start = {"event": "run_start", "context": context, "shard": shard}
        self.heartbeat_s = _heartbeat_s()
        self.interrupted: int | None = None         # the signal that stopped the run
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
                proc = self._spawn(i, group)
                self._watch(proc, group, live, i, len(groups))
        except Interrupted as e:
            self.interrupted = e.signum
            self._stop(proc, f"interrupted by {e}")
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
                                 "(past its timeout, and the timeout could not interrupt it)")
            if live:
                live.update(self._view(index, total))
            else:
                self._log_new(events)
        if proc.returncode not in (0, 1, 5):     # 1: some test failed; 5: none collected
            self._record_crash(proc.returncode, index, group)

    def _spawn(self, index: int, group: list[Planned]) -> subprocess.Popen:
        plan_path = self.dir / "logs" / f"plan-{index}.json"
        plan_path.write_text(json.dumps({"results": str(self.results.resolve()), "junit": str(self.junit.resolve()),
                                         "entries": [p.to_json() for p in group]}))
        args = []
        for p in group:          # an entry with raw pytest args is always alone in its group
            args += [p.entry.ref.test_id, *p.entry.ref.pytest_args]
        args = _with_user_k(args, self.user_k)
        cmd = [sys.executable, "-m", "pytest", "-p", "trtx.cli.run.pytest_plugin", f"--trtx-plan={plan_path}",
               f"--rootdir={self.root}", f"--confcutdir={self.root}", "-p", "no:cacheprovider", "-q", *args]
        log = open(self.dir / "logs" / f"pytest-{index}.log", "w")
        with log:
            return subprocess.Popen(cmd, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=die_with_parent, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def _stop(self, proc: subprocess.Popen | None, message: str) -> None:
        """Kill the pytest child's process group; each test it was running becomes an error."""
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self._fail_running(message)

    def _fail_running(self, message: str) -> None:
        """Record each test that started and has no finish (its process is gone) as an error."""
        drop_torn_tail(self.results)                # the child may have died mid-line
        events = read_events(self.results)
        started = {e["nodeid"]: e["time"] for e in events if e["event"] == "start"}
        for r in results_from_events(events, running_ok=True):
            if r.outcome == "running":
                append_event(self.results, {"event": "finish", "nodeid": r.nodeid, "entry": r.entry, "outcome": "error",
                                            "duration": round(time.time() - started[r.nodeid], 3), "message": message})

    def _record_crash(self, code: int, index: int, group: list[Planned]) -> None:
        """pytest itself failed (a crash, a collection or usage error): its running test and each
        entry it did not report become errors."""
        message = f"pytest exited with {code}:\n" + (self.dir / "logs" / f"pytest-{index}.log").read_text()[-3000:]
        self._fail_running(message)
        done = {e.get("entry") for e in read_events(self.results)}
        for p in group:
            if str(p.entry.ref) not in done:
                append_event(self.results, {"event": "finish", "nodeid": str(p.entry.ref), "entry": str(p.entry.ref),
                                            "outcome": "error", "message": message})

    def _log_new(self, events: list[dict]) -> None:
        """Without a terminal (a CI log): one line when a test starts, one when it ends, and one
        every heartbeat_s while it runs; never wrapped, so that each is one grep-able line."""
        for ev in events[self._shown:]:
            if ev["event"] == "start":
                self._running[ev["nodeid"]] = [ev["time"], 0]
                self._say(Text(f"{'START':8} {ev['nodeid']}"))
            elif ev["event"] == "finish":
                self._running.pop(ev["nodeid"], None)
                self._say(result_line(results_from_events([ev])[0]))
        self._shown = len(events)
        for nodeid, beat in self._running.items():
            elapsed = time.time() - beat[0]
            if elapsed // self.heartbeat_s > beat[1]:
                beat[1] = elapsed // self.heartbeat_s
                self._say(Text(f"{'RUNNING':8} {nodeid} (still running, {_clock(elapsed)})"))

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
