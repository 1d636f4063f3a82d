"""The history of a test list's runs: one SQLite file per context (RESULTS/history/CONTEXT.sqlite),
to which `trtx run` appends each run's results, and from which `trtx report --history` and
`trtx waive check --stale` read. The layout is documented in docs/history.md.

Each append is one transaction: a writer killed mid-append (SIGKILL, a full disk) leaves the
runs recorded before it as they were, and no part of its own.
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .results import TestResult

SCHEMA_VERSION = 1
HISTORY_DIR = "history"
LABEL_VARIABLES = ("GITHUB_SHA", "CI_COMMIT_SHA", "GIT_COMMIT")     # first one set names the run
LABEL_LENGTH = 12
BUSY_TIMEOUT_S = 60.0          # shards appending to one file wait for one another's transactions

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run INTEGER PRIMARY KEY, context TEXT NOT NULL, shard TEXT, started REAL NOT NULL, ended REAL NOT NULL,
    interrupted TEXT, label TEXT, host TEXT);
CREATE TABLE results (
    run INTEGER NOT NULL REFERENCES runs(run), nodeid TEXT NOT NULL, entry TEXT NOT NULL, outcome TEXT NOT NULL,
    duration REAL NOT NULL, headline TEXT NOT NULL, metrics TEXT NOT NULL, waive TEXT,
    flaky INTEGER NOT NULL, attempts INTEGER NOT NULL, PRIMARY KEY (run, nodeid));
CREATE INDEX results_by_test ON results (nodeid, run);
"""


@dataclass(frozen=True)
class Run:
    number: int
    context: str
    shard: str | None
    started: float              # Unix seconds
    ended: float
    interrupted: str | None     # "SIGTERM" or "SIGINT" when a signal ended the run
    label: str | None           # the commit it ran, short, from CI's environment
    host: str | None


@dataclass(frozen=True)
class Record:
    """One test's result in one run."""
    run: int
    nodeid: str
    entry: str
    outcome: str
    duration: float
    headline: str
    metrics: dict = field(default_factory=dict)
    waive: str | None = None
    flaky: bool = False
    attempts: int = 1


@dataclass
class History:
    path: Path
    context: str
    runs: dict[int, Run]                 # by run number, ascending
    tests: dict[str, list[Record]]       # nodeid -> its records, oldest run first


def default_history_path(results_dir: Path, context: str) -> Path:
    return Path(results_dir) / HISTORY_DIR / f"{context}.sqlite"


def run_label(environ: dict[str, str] | None = None) -> str | None:
    """The commit CI ran, short: the first of LABEL_VARIABLES that is set, else None."""
    env = os.environ if environ is None else environ
    return next((env[name].strip()[:LABEL_LENGTH] for name in LABEL_VARIABLES if env.get(name, "").strip()), None)


def _connect(path: Path, writing: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are begun explicitly). A reader never creates
    the file; it opens it read-write when it may, so that it can roll back a hot journal left by
    a killed writer (a read-only connection refuses such a file)."""
    if writing:
        uri = f"{path.resolve().as_uri()}?mode=rwc"
    else:
        if not path.is_file():
            raise UserError("no such history file (trtx run records each run of a list in "
                            "RESULTS/history/CONTEXT.sqlite)" if not path.exists() else "is not a file: expected a history "
                            "file (RESULTS/history/CONTEXT.sqlite)", str(path))
        uri = f"{path.resolve().as_uri()}?mode={'rw' if os.access(path, os.W_OK) else 'ro'}"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as e:
        raise UserError(f"cannot open the history: {e}", str(path)) from None
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _meta(conn: sqlite3.Connection, path: Path) -> dict[str, str] | None:
    """The meta table of a trtx history; None for an empty (new) database; UserError for a file
    that is not SQLite, not a trtx history, or of a newer schema."""
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return None
        if "meta" not in tables:
            raise UserError("not a trtx history (an SQLite file without its meta table)", str(path))
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    except sqlite3.DatabaseError as e:
        raise UserError(f"not a trtx history: {e}", str(path)) from None
    version = meta.get("schema_version", "")
    if not version.isdecimal() or "context" not in meta:
        raise UserError("not a trtx history (its meta table lacks schema_version or context)", str(path))
    if int(version) > SCHEMA_VERSION:
        raise UserError(f"written by a newer trtx (history schema {version}; this trtx reads up to "
                        f"{SCHEMA_VERSION})", str(path))
    return meta


def _check_context(meta: dict[str, str], context: str | None, path: Path) -> None:
    if context is not None and meta["context"] != context:
        raise UserError(f"the history of {meta['context']}, not of {context}: each test list has its own "
                        "history file", str(path))


def append_run(path: Path, context: str, shard: str | None, results: list[TestResult], started: float,
               ended: float, interrupted: str | None) -> int:
    """Record one run (one shard of a sharded run) and its results; create the file and its
    folder when needed. Returns the run's number (1 for the first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(path, writing=True)
    try:
        # IMMEDIATE: take the write lock before reading the last run number, so that two shards
        # appending at once get different numbers.
        conn.execute("BEGIN IMMEDIATE")
        try:
            meta = _meta(conn, path)
            if meta is None:
                for statement in SCHEMA.split(";"):      # not executescript: it would commit first
                    conn.execute(statement)
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                                 [("schema_version", str(SCHEMA_VERSION)), ("context", context)])
            else:
                _check_context(meta, context, path)
            number = conn.execute("SELECT COALESCE(MAX(run), 0) + 1 FROM runs").fetchone()[0]
            conn.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (number, context, shard, started, ended, interrupted, run_label(), socket.gethostname()))
            # A node id twice in one run keeps its last result, as results.jsonl's fold does.
            conn.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             ((number, r.nodeid, r.entry, r.outcome, r.duration, r.headline,
                               json.dumps(r.metrics), r.waive, int(r.flaky), 1 + len(r.attempts))
                              for r in results))
            conn.execute("COMMIT")
        except BaseException:                   # an error, Ctrl-C, SIGTERM: nothing of this run stays
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as e:
        raise UserError(f"cannot record the run in the history: {e}", str(path)) from None
    finally:
        conn.close()
    return number


def check_writable(path: Path, context: str) -> None:
    """Before a run: UserError unless the run can be appended to `path` afterwards (a history of
    this list, or none yet, and the file or its folder writable), so that a bad history is said
    before the tests run, not after."""
    path = Path(path)
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=path.parent).close()
        except OSError as e:
            raise UserError(f"cannot create the history here: {e.strerror}", str(path)) from None
        return
    conn = _connect(path, writing=True)
    try:
        conn.execute("BEGIN IMMEDIATE")
        meta = _meta(conn, path)            # the meta table only: no need to read every run first
        if meta is None:
            raise UserError("not a trtx history (an empty SQLite file)", str(path))
        _check_context(meta, context, path)
        conn.execute("INSERT INTO meta (key, value) VALUES ('write check', '')")    # rolled back at once
    except sqlite3.DatabaseError as e:
        raise UserError(f"cannot record runs in this history: {e}", str(path)) from None
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def load_history(path: Path, context: str | None = None) -> History:
    """Every run and result of a history file; with `context`, refuse another list's history."""
    path = Path(path)
    conn = _connect(path, writing=False)
    try:
        conn.execute("BEGIN")              # one snapshot: a shard appending meanwhile is all in or all out
        meta = _meta(conn, path)
        if meta is None:
            raise UserError("not a trtx history (an empty SQLite file)", str(path))
        _check_context(meta, context, path)
        runs = {row[0]: Run(*row) for row in conn.execute(
            "SELECT run, context, shard, started, ended, interrupted, label, host FROM runs ORDER BY run")}
        tests: dict[str, list[Record]] = {}
        for row in conn.execute("SELECT run, nodeid, entry, outcome, duration, headline, metrics, waive, flaky, "
                                "attempts FROM results ORDER BY run, rowid"):
            record = Record(*row[:6], json.loads(row[6]), row[7], bool(row[8]), row[9])
            tests.setdefault(record.nodeid, []).append(record)
    except (sqlite3.DatabaseError, ValueError) as e:      # ValueError: an edited metrics cell
        raise UserError(f"cannot read the history: {e}", str(path)) from None
    finally:
        conn.close()
    return History(path, meta["context"], runs, tests)
