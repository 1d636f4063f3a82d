"""What kind of failure a failed test had, for `trtx run --retries`: only a failure of the
infrastructure (the test's job never got going, or lost its connections) is worth running again;
a gate, an assertion or an engine error is the verdict, and a retry must never hide it.

    infra      the launcher failed before any rank started, or every rank that raised died of a
               rendezvous or connection error (torch.distributed's store or network errors, a
               refused, reset or closed connection), or the test itself raised one, with no
               assert or timeout anywhere in its chain of causes
    timeout    the test ran past its timeout: pytest-timeout's, the launcher's job timeout, or trtx's
               watchdog (retried only with --retry-timeouts)
    assertion  an assert failed, the accuracy and acceptance gates included
    error      anything else (an exception in the engine, a crash)
"""
from __future__ import annotations

import re

INFRA, TIMEOUT, ASSERTION, ERROR = "infra", "timeout", "assertion", "error"
KINDS = (INFRA, TIMEOUT, ASSERTION, ERROR)

# Exceptions (by class name, so that torch need not be imported) and log text that mean a job lost
# its rendezvous or a connection, not that the code under test is wrong.
_INFRA_EXCEPTIONS = {"DistNetworkError", "DistStoreError", "RendezvousError", "RendezvousTimeoutError",
                     "RendezvousConnectionError", "ConnectionRefusedError", "ConnectionResetError",
                     "ConnectionAbortedError", "BrokenPipeError"}
_INFRA_TEXT = re.compile("|".join([*(rf"\b{name}\b" for name in sorted(_INFRA_EXCEPTIONS)),
                                   r"Connection (?:refused|reset by peer|closed by peer)", r"Broken pipe",
                                   r"Address already in use"]))
_PYTEST_TIMEOUT = "from pytest-timeout"       # pytest-timeout's failure message: "Timeout (>600s) from pytest-timeout."


def classify(exc: BaseException | None) -> str:
    """The kind of the failure that raised `exc`, looking through its causes. A verdict anywhere
    in the chain (an assert, a timeout) outranks a connection error raised while cleaning up after
    it: only a failure with no other explanation is infra."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    if any(isinstance(e, AssertionError) for e in chain):
        return ASSERTION
    kinds = [_launch_kind(getattr(e, "launch", None)) for e in chain]     # RankJobError carries its LaunchResult
    if TIMEOUT in kinds or any(_PYTEST_TIMEOUT in str(e) for e in chain):
        return TIMEOUT
    if ERROR in kinds:
        return ERROR
    if INFRA in kinds or any(type(e).__name__ in _INFRA_EXCEPTIONS for e in chain):
        return INFRA
    return ERROR


def classify_log(text: str) -> str:
    """The kind of a failure known only from a log (pytest itself died): pytest-timeout's thread
    method writes a "Timeout" banner before it ends the process."""
    return TIMEOUT if re.search(r"^\+{5,} Timeout \+{5,}$", text, re.M) else ERROR


def _launch_kind(launch) -> str | None:
    """A failed job's kind: infra only when every rank that raised died of a rendezvous or
    connection error (one rank's assert, seen by its peers as lost connections, is an error)."""
    reason = getattr(launch, "reason", None)
    if reason == "launcher-error":
        return INFRA
    if reason == "timeout":
        return TIMEOUT
    if reason == "failed":
        # Each rank's exception line: its root cause, not what it caught on the way.
        last_lines = [lines[-1] for lines in (r.traceback().splitlines() for r in launch.ranks) if lines]
        return INFRA if last_lines and all(_INFRA_TEXT.search(line) for line in last_lines) else ERROR
    return None
