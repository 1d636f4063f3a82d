"""Reports a CI reads: attempts folded from results.jsonl events, JUnit whose header agrees with
its test cases, and Markdown tables that node ids cannot break."""
import xml.etree.ElementTree as ET

from trtx.cli.run.report import render_markdown
from trtx.cli.run.results import TestResult, junit_xml, results_from_events

T = "suite/t.py::test_x"


def events(*finishes):
    out = [{"event": "run_start", "context": "c"}]
    for attempt, outcome, failure, message in finishes:
        out += [{"event": "start", "nodeid": T, "entry": T, "attempt": attempt},
                {"event": "finish", "nodeid": T, "entry": T, "outcome": outcome, "failure": failure,
                 "message": message, "attempt": attempt}]
    return out + [{"event": "run_end", "interrupted": None}]


def test_a_retry_keeps_the_attempts_before_it_and_a_pass_then_is_flaky():
    (r,) = results_from_events(events((1, "failed", "infra", "E   ConnectionResetError: reset"),
                                      (2, "passed", None, "")))
    assert r.outcome == "passed" and r.flaky
    assert r.attempts == [{"outcome": "failed", "message": "E   ConnectionResetError: reset", "duration": 0.0,
                           "failure": "infra"}]
    # The same test listed twice in one run is no retry: the last result wins, with no attempts.
    (again,) = results_from_events(events((1, "failed", "assertion", "E   x"), (1, "passed", None, "")))
    assert again.outcome == "passed" and not again.attempts and not again.flaky


def test_junit_counts_agree_with_the_elements_of_a_retried_test():
    (r,) = results_from_events(events((1, "failed", "infra", "E   ConnectionResetError: reset"),
                                      (2, "error", None, "interrupted by SIGTERM")))
    suite = ET.fromstring(junit_xml([r])).find("testsuite")
    case = suite.find("testcase")
    assert [c.tag for c in case] == ["failure", "rerunError"]        # Surefire: the first attempt leads
    assert (suite.get("failures"), suite.get("errors")) == ("1", "0")


def test_markdown_table_cells_survive_pipes_and_backticks_in_node_ids():
    nodeid = "suite/t.py::test_p[a|`b]"
    text = render_markdown([TestResult(nodeid, nodeid, "failed", message="E   AssertionError: x | y")], None)
    row = next(line for line in text.splitlines() if "test_p" in line)
    assert row == "| ❌ failed | `` suite/t.py::test_p[a\\|`b] `` | 0.0s | AssertionError: x \\| y |"
