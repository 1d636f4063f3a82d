"""The results of a run: an append-only JSON-lines log, the JUnit XML made from it, and the
results folder that holds them (with durations.json, and the run before in previous/).

`trtx run` writes a `run_start` line, then each test a `start` line when it begins and a `finish`
line when it ends, then a `run_end` line; each is flushed at once, and JUnit is rewritten
atomically at every test's start and finish. Whatever kills the harness, the file holds the
finished tests' results, a test with a start but no finish is an error ("did not finish"), and a
run with no `run_end` (or an interrupted one) is one more error: the tests after it never ran. An
empty file (the run died before writing anything) is an error too, never a green run of 0 tests.
The layout is documented in docs/results.md.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..fsutil import atomic_write

RESULTS_FILE = "results.jsonl"
JUNIT_FILE = "junit.xml"
FAILING = ("failed", "error")
PASSING = ("passed", "xpassed")
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
RECORDED_NOTHING = "the run recorded nothing: its results file is empty (trtx run died before writing to it)"
NOT_FINISHED = "did not finish: started but never finished (the harness was killed or hung)"
INTERRUPTED = "interrupted by "     # + the signal: a test's or a run's message when SIGTERM or SIGINT stopped it


@dataclass
class TestResult:
    __test__ = False            # a data type, not a pytest test class
    nodeid: str
    entry: str = ""             # the test-list line it came from
    outcome: str = "error"      # passed failed error skipped xfailed xpassed
    duration: float = 0.0
    message: str = ""
    metrics: dict = field(default_factory=dict)
    waive: str | None = None    # "SKIP (reason)" when a waive applied
    finished: bool = True
    failure: str | None = None  # a failing outcome's class (failures.py): infra, timeout, assertion, error
    # The earlier attempts of a test that `trtx run --retries` ran again, oldest first: each
    # {"outcome", "message", "duration", "failure"}. The result itself is the last attempt.
    attempts: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.outcome in FAILING

    @property
    def flaky(self) -> bool:
        """Failed, then passed when run again: green, but reported as flaky."""
        return self.outcome in PASSING and any(a["outcome"] in FAILING for a in self.attempts)

    @property
    def headline(self) -> str:
        return headline(self.message)


KEPT = ("previous", "history")        # what a new run leaves in place: the run before, the runs' history


def headline(message: str) -> str:
    """A message's most telling line: pytest's long repr ends with the error line
    ("E   AssertionError: ..."), else its last line."""
    lines = [ln for ln in message.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E ")]
    return (errors[0][1:].strip() if errors else lines[-1].strip() if lines else "")[:200]


def fresh_results_dir(path: Path) -> None:
    """Start a results directory; a previous run's files move to previous/ (a ready baseline),
    and history/ stays (cli/run/history.py)."""
    path.mkdir(parents=True, exist_ok=True)
    if (path / RESULTS_FILE).exists():
        prev = path / "previous"
        shutil.rmtree(prev, ignore_errors=True)
        prev.mkdir()
        for child in list(path.iterdir()):
            if child.name not in KEPT:
                child.rename(prev / child.name)


def append_event(path: str | Path, event: dict) -> None:
    line = json.dumps({**event, "time": time.time()}) + "\n"
    # One write of one line, opened for append: concurrent writers never interleave mid-line.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def drop_torn_tail(path: str | Path) -> None:
    """Cut a torn last line (its writer was just killed) before appending after it, so that it
    never becomes a torn line in the middle, which read_events rejects."""
    try:
        with open(path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
    except FileNotFoundError:
        pass


# The fields each test event needs; results_from_events reads them with [].
_REQUIRED = {"start": ("nodeid",), "finish": ("nodeid", "outcome")}


def read_events(path: str | Path) -> list[dict]:
    """The events of a results file. A torn last line (its writer killed, or still writing during a
    live run) is ignored; a bad line anywhere else is a UserError naming the file and line."""
    events = []
    try:
        with open(path, errors="replace") as f:           # garbage bytes fail as a bad line, below
            for number, line in enumerate(f, 1):
                if not line.endswith("\n"):
                    break
                try:
                    event = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"not a JSON line ({e.msg}): a torn or edited results file", str(path),
                                    number) from None
                if not isinstance(event, dict) or not isinstance(event.get("event"), str):
                    raise UserError("not a results event (a JSON object with an \"event\" field)", str(path), number)
                missing = [k for k in _REQUIRED.get(event["event"], ()) if not isinstance(event.get(k), str)]
                if missing:
                    raise UserError(f"{event['event']} event without {', '.join(missing)}", str(path), number)
                if event["event"] == "finish" and event["outcome"] not in OUTCOMES:
                    raise UserError(f"finish event with unknown outcome {event['outcome']!r}; expected one of "
                                    f"{', '.join(OUTCOMES)}", str(path), number)
                events.append(event)
    except FileNotFoundError:
        pass
    return events


def run_name(run_start: dict) -> str:
    shard = run_start.get("shard")
    return f"trtx run {run_start.get('context', '')}" + (f" --shard {shard}" if shard else "")


def results_from_events(events: list[dict], running_ok: bool = False) -> list[TestResult]:
    """Fold the events into one result per test, in start order. A test that started and never
    finished is an error, and so is a run that never ended (one more result, named after the run)
    or recorded no event at all (one result, `trtx run`), unless `running_ok` (a live view of a run
    still going)."""
    by_id: dict[str, TestResult] = {}
    run_start = run_end = None
    for ev in events:
        kind = ev["event"]
        if kind in ("start", "finish"):
            before = by_id.get(ev["nodeid"])
            attempts = _attempts_before(before, ev.get("attempt", 1))
        if kind == "start":
            by_id[ev["nodeid"]] = TestResult(ev["nodeid"], ev.get("entry", ""), outcome="running", finished=False,
                                             message=NOT_FINISHED, attempts=attempts)
        elif kind == "finish":
            by_id[ev["nodeid"]] = TestResult(ev["nodeid"], ev.get("entry", ""), ev["outcome"], ev.get("duration", 0.0),
                                             ev.get("message", ""), ev.get("metrics", {}), ev.get("waive"),
                                             failure=ev.get("failure"), attempts=attempts)
        elif kind == "run_start":
            run_start, run_end = ev, None
        elif kind == "run_end":
            run_end = ev
    results = list(by_id.values())
    if not events and not running_ok:
        results.append(TestResult("trtx run", outcome="error", message=RECORDED_NOTHING))
    if not running_ok:
        for r in results:
            if not r.finished:
                r.outcome = "error"
    interrupted = run_end and run_end.get("interrupted")
    if run_start and (interrupted or not run_end and not running_ok):
        why = f"{INTERRUPTED}{interrupted}" if interrupted else "did not finish: trtx run was killed before the end"
        results.append(TestResult(run_name(run_start), outcome="error",
                                  message=f"{why}; tests it had not started did not run"))
    return results


def _attempts_before(before: TestResult | None, attempt: int) -> list[dict]:
    """The earlier attempts of a test whose attempt number `attempt` this event is: none for a
    first attempt; for a retry, those of the result it follows, and that result if it finished."""
    if before is None or attempt <= 1:
        return []
    if not before.finished:                  # the retry's own start, then its finish
        return before.attempts
    return before.attempts + [{"outcome": before.outcome, "message": before.message, "duration": before.duration,
                               "failure": before.failure}]


def load_results(results_dir: str | Path) -> list[TestResult]:
    path = Path(results_dir) / RESULTS_FILE
    if not path.exists():
        raise UserError(f"no {RESULTS_FILE} here: not a trtx results directory", str(results_dir))
    return results_from_events(read_events(path))


def newest_results_dir(base: Path) -> Path:
    """`base` when it holds a run; else the results folder under it written last (`make run`
    writes results/l0_cpu)."""
    if (base / RESULTS_FILE).exists():
        return base
    runs = sorted(base.glob(f"*/{RESULTS_FILE}"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UserError(f"no {RESULTS_FILE} in {base}/ nor in a folder under it: "
                        "name the results folder (`trtx run --results DIR` wrote it)")
    return runs[-1].parent


def junit_xml(results: list[TestResult]) -> str:
    suite = ET.Element("testsuite", name="trtx", tests=str(len(results)), time=f"{sum(r.duration for r in results):.3f}")
    for r in results:
        module, _, name = r.nodeid.rpartition("::")
        case = ET.SubElement(suite, "testcase", classname=module.replace("/", ".").replace("::", ".") or "trtx",
                             name=name or r.nodeid, time=f"{r.duration:.3f}",
                             **({"file": module.split("::")[0]} if module else {}))
        if r.metrics or r.waive:
            props = ET.SubElement(case, "properties")
            for k, v in r.metrics.items():
                ET.SubElement(props, "property", name=k, value=str(v))
            if r.waive:
                ET.SubElement(props, "property", name="waive", value=r.waive)
        if r.failed:
            _add_failures(case, r)
        else:
            for a in r.attempts:             # Surefire: the failed attempts of a test that passed at last
                if a["outcome"] in FAILING:
                    _attempt_element(case, ("flakyFailure" if a["outcome"] == "failed" else "flakyError"), a)
        if r.outcome in ("skipped", "xfailed"):
            ET.SubElement(case, "skipped", message=r.headline or r.outcome)
    # Counted from the elements written, so that the header agrees with them: a test that failed
    # every attempt counts as its first attempt did (Surefire), a flaky one as neither.
    for count, tag in (("failures", "failure"), ("errors", "error"), ("skipped", "skipped")):
        suite.set(count, str(len(suite.findall(f"testcase/{tag}"))))
    tree = ET.ElementTree(ET.Element("testsuites"))
    tree.getroot().append(suite)
    return ET.tostring(tree.getroot(), encoding="unicode", xml_declaration=True) + "\n"


def _add_failures(case: ET.Element, r: TestResult) -> None:
    """A failed test as Maven Surefire writes one that was run again: <failure> (or <error>) holds
    the first attempt's failure, and each later one is a <rerunFailure> (<rerunError>)."""
    attempts = [*(a for a in r.attempts if a["outcome"] in FAILING),
                {"outcome": r.outcome, "message": r.message, "failure": r.failure}]
    first, *reruns = attempts
    ET.SubElement(case, "failure" if first["outcome"] == "failed" else "error", message=headline(first["message"])
                  or first["outcome"], **_type(first)).text = first["message"]
    for a in reruns:
        _attempt_element(case, "rerunFailure" if a["outcome"] == "failed" else "rerunError", a)


def _attempt_element(case: ET.Element, tag: str, attempt: dict) -> None:
    element = ET.SubElement(case, tag, message=headline(attempt["message"]) or attempt["outcome"], **_type(attempt))
    ET.SubElement(element, "stackTrace").text = attempt["message"]


def _type(attempt: dict) -> dict:
    return {"type": attempt["failure"]} if attempt.get("failure") else {}


def write_junit(results: list[TestResult], path: str | Path) -> None:
    """JUnit XML at `path` (`-`: standard output), replaced atomically."""
    atomic_write(path, junit_xml(results))


def write_durations(results: list[TestResult], path: Path) -> None:
    """{list entry: seconds} of a run (durations.json: what a later `--shard` balances on)."""
    by_entry: dict[str, float] = {}
    for r in results:
        if r.entry:                                  # not the error of a run cut short
            by_entry[r.entry] = by_entry.get(r.entry, 0.0) + r.duration
    path.write_text(json.dumps(by_entry, indent=1, sort_keys=True))
