"""The pytest plugin behind `trtx run`, loaded in each pytest child with `-p trtx.cli.run.pytest_plugin
--trtx-plan PLAN.json`.

The plan names the test-list entries this child runs (the node ids themselves are pytest's
arguments, so pytest keeps exactly those tests, in list order), each with the waives that can apply
to its tests. For each collected test the plugin applies the entry's timeout and the most specific
waive that contains the test (one naming its node id, then its function, class or file; one naming
the entry itself, a folder included, with the entry's pytest arguments, covers every test of the
entry), writes a `start` line when it begins and a `finish` line with outcome, duration, message and
recorded metrics when it ends, and rewrites JUnit at both: from its start until its finish the test
is in JUnit as an error ("did not finish"), so a harness killed mid-test leaves a red JUnit, never a
green one with the test missing.
Tests record metrics with pytest's own `record_property("accuracy", 91.3)`. A failing test's
`finish` line also says what kind of failure it was (failures.py), which `--retries` goes by, and
every line says which attempt of the test it is (a retry runs in a pytest child of its own).
With `run_waived` in the plan (`trtx run --run-waived`) a SKIP waive runs its test as XFAIL does:
its result (xpassed, xfailed) says whether the waive is still needed, and fails nothing (a crash
or a hang, which trtx records itself, still does).
"""
from __future__ import annotations

import json
import math

import pytest

from ..lists.testline import waive_covers, within
from ..lists.waives import waive_label
from .failures import ERROR, classify
from .results import FAILING, PASSING, append_event, read_events, results_from_events, write_junit

_MAX_MESSAGE = 6000


def pytest_addoption(parser):
    parser.addoption("--trtx-plan", help="JSON plan written by `trtx run` (internal).")


def pytest_configure(config):
    plan_path = config.getoption("--trtx-plan")
    if plan_path:
        with open(plan_path) as f:
            config.pluginmanager.register(_TrtxRun(json.load(f)), "trtx-run")


class _TrtxRun:
    def __init__(self, plan: dict):
        self.results, self.junit = plan["results"], plan["junit"]
        self.attempt, self.run_waived = plan.get("attempt", 1), plan.get("run_waived", False)
        # Most specific entry first: an exact node id beats its class, its file, its folder.
        self.entries = sorted(plan["entries"], key=lambda e: -len(e["test_id"]))
        self.items: dict[str, dict] = {}      # nodeid -> entry
        self.waived: dict[str, dict] = {}     # nodeid -> the waive that decides its outcome
        self.phases: dict[str, list] = {}
        self.failures: dict[str, str] = {}    # nodeid -> the kind of its first failing phase

    def _entry_for(self, nodeid: str) -> dict | None:
        return next((e for e in self.entries if within(nodeid, e["test_id"])), None)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        for item in items:
            entry = self._entry_for(item.nodeid)
            if entry is None:
                continue
            self.items[item.nodeid] = entry
            # The plan lists the entry's waives most specific first: the first of each kind decides.
            mine = [w for w in entry["waives"] if w["whole_entry"] or waive_covers(item.nodeid, w["test_id"])]
            timeout = next((w for w in mine if w["marker"] == "TIMEOUT"), entry)["timeout_s"]
            item.add_marker(pytest.mark.timeout(timeout))
            # A SKIP naming the entry itself skips all of it, whatever lies inside (TensorRT-LLM
            # never starts an entry waived so); else the most specific outcome waive decides.
            waive = next((w for w in mine if w["whole_entry"] and w["marker"] == "SKIP"), None) or \
                next((w for w in mine if w["marker"] != "TIMEOUT"), None)
            if waive:
                self.waived[item.nodeid] = waive
                reason = f"waived: {waive_label(waive['marker'], waive['reason'])}"
                if waive["marker"] == "SKIP" and not self.run_waived:
                    item.add_marker(pytest.mark.skip(reason=reason))
                else:                   # XFAIL, UNSTABLE, a SKIP run anyway: a failure does not fail the run
                    item.add_marker(pytest.mark.xfail(reason=reason, strict=False))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = (yield).get_result()
        if report.failed and call.excinfo is not None:
            self.failures.setdefault(item.nodeid, classify(call.excinfo.value))

    def pytest_runtest_logstart(self, nodeid, location):
        start = {"event": "start", "nodeid": nodeid, "entry": self.items.get(nodeid, {}).get("entry", ""),
                 "attempt": self.attempt}
        # JUnit first: once results.jsonl says the test started, JUnit already holds it as an error.
        write_junit(results_from_events(read_events(self.results) + [start]), self.junit)
        append_event(self.results, start)

    def pytest_runtest_logreport(self, report):
        self.phases.setdefault(report.nodeid, []).append(report)
        if report.when == "teardown":
            self._finish(report.nodeid, self.phases.pop(report.nodeid))

    def _finish(self, nodeid: str, reports: list) -> None:
        entry = self.items.get(nodeid, {})
        outcome, message = _outcome(reports)
        failure = self.failures.pop(nodeid, None)
        if self.attempt > 1 and outcome in ("skipped", "xfailed"):
            # A retry that gives no verdict (skipped for want of a GPU its first attempt still held)
            # must not end a failed test green.
            outcome, failure, message = "error", ERROR, (f"attempt {self.attempt} was {outcome} after a failed "
                                                         f"attempt, which is no verdict: {message}")
        waive = self.waived.get(nodeid)
        append_event(self.results, {
            "event": "finish", "nodeid": nodeid, "entry": entry.get("entry", ""), "outcome": outcome,
            "duration": round(sum(r.duration for r in reports), 3), "message": message[-_MAX_MESSAGE:],
            "metrics": {k: _jsonable(v) for k, v in reports[-1].user_properties},
            "waive": waive_label(waive["marker"], waive["reason"]) if waive else None, "attempt": self.attempt,
            "failure": failure if outcome in FAILING else None,
            # Only a failed test runs again: one that now passes is flaky.
            "flaky": self.attempt > 1 and outcome in PASSING})
        write_junit(results_from_events(read_events(self.results)), self.junit)


def _outcome(reports) -> tuple[str, str]:
    """One outcome for a test from its setup/call/teardown reports."""
    by_when = {r.when: r for r in reports}
    setup, call, teardown = by_when.get("setup"), by_when.get("call"), by_when.get("teardown")
    if setup is not None and setup.failed:
        return "error", setup.longreprtext
    if setup is not None and setup.skipped:
        if hasattr(setup, "wasxfail"):
            return "xfailed", setup.wasxfail
        return "skipped", _skip_reason(setup)
    outcome, message = "passed", ""
    if call is not None:
        if call.skipped and hasattr(call, "wasxfail"):
            outcome, message = "xfailed", call.longreprtext or call.wasxfail
        elif call.skipped:
            outcome, message = "skipped", _skip_reason(call)
        elif call.failed:
            outcome, message = "failed", call.longreprtext
        elif hasattr(call, "wasxfail"):
            outcome, message = "xpassed", call.wasxfail
    if teardown is not None and teardown.failed and outcome in ("passed", "xpassed"):
        return "error", teardown.longreprtext
    return outcome, message


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _jsonable(value):
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    try:
        return float(value)              # numpy / torch scalars
    except (TypeError, ValueError):
        return str(value)
