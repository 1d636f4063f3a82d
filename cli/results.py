"""The results of a run: an append-only JSON-lines log, and the JUnit XML made from it.

Each test writes a `start` line when it begins and a `finish` line when it ends, each flushed at
once; JUnit is rewritten atomically after every finish. Whatever kills the harness, the finished
tests' results are on disk, and a test with a start but no finish is reported as an error.
"""
from __future__ import annotations

import json
import os
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .fsutil import atomic_write

RESULTS_FILE = "results.jsonl"
JUNIT_FILE = "junit.xml"
FAILING = ("failed", "error")


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

    @property
    def failed(self) -> bool:
        return self.outcome in FAILING


def append_event(path: str | Path, event: dict) -> None:
    line = json.dumps({**event, "time": time.time()}) + "\n"
    # One write of one line, opened for append: concurrent writers never interleave mid-line.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_events(path: str | Path) -> list[dict]:
    events = []
    try:
        with open(path) as f:
            for line in f:
                if line.endswith("\n"):           # a torn last line (writer killed) is ignored
                    events.append(json.loads(line))
    except FileNotFoundError:
        pass
    return events


def results_from_events(events: list[dict], running_ok: bool = False) -> list[TestResult]:
    """Fold start/finish lines into one result per test, in start order. A test that started and
    never finished is an error, unless `running_ok` (a live view of a run still going)."""
    by_id: dict[str, TestResult] = {}
    for ev in events:
        nodeid = ev["nodeid"]
        if ev["event"] == "start":
            by_id[nodeid] = TestResult(nodeid, ev.get("entry", ""), outcome="running", finished=False,
                                       message="started but never finished: the harness was killed or hung")
        elif ev["event"] == "finish":
            by_id[nodeid] = TestResult(nodeid, ev.get("entry", ""), ev["outcome"], ev.get("duration", 0.0),
                                       ev.get("message", ""), ev.get("metrics", {}), ev.get("waive"))
    results = list(by_id.values())
    if not running_ok:
        for r in results:
            if not r.finished:
                r.outcome = "error"
    return results


def load_results(results_dir: str | Path) -> list[TestResult]:
    path = Path(results_dir) / RESULTS_FILE
    if not path.exists():
        from .errors import UserError
        raise UserError(f"no {RESULTS_FILE} here: not a trtx results directory", str(results_dir))
    return results_from_events(read_events(path))


def write_junit(results: list[TestResult], path: str | Path) -> None:
    counts = {k: sum(r.outcome in v for r in results) for k, v in
              {"failures": ("failed",), "errors": ("error",), "skipped": ("skipped", "xfailed")}.items()}
    suite = ET.Element("testsuite", name="trtx", tests=str(len(results)),
                       time=f"{sum(r.duration for r in results):.3f}", **{k: str(v) for k, v in counts.items()})
    for r in results:
        module, _, name = r.nodeid.rpartition("::")
        case = ET.SubElement(suite, "testcase", classname=module.replace("/", ".").replace("::", "."),
                             name=name or r.nodeid, time=f"{r.duration:.3f}")
        if r.metrics or r.waive:
            props = ET.SubElement(case, "properties")
            for k, v in r.metrics.items():
                ET.SubElement(props, "property", name=k, value=str(v))
            if r.waive:
                ET.SubElement(props, "property", name="waive", value=r.waive)
        first_line = r.message.strip().splitlines()[0] if r.message.strip() else r.outcome
        if r.outcome in ("failed", "error"):
            ET.SubElement(case, "failure" if r.outcome == "failed" else "error", message=first_line).text = r.message
        elif r.outcome in ("skipped", "xfailed"):
            ET.SubElement(case, "skipped", message=first_line)
    tree = ET.ElementTree(ET.Element("testsuites"))
    tree.getroot().append(suite)
    atomic_write(path, ET.tostring(tree.getroot(), encoding="unicode", xml_declaration=True))
