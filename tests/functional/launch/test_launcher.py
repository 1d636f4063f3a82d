"""The launcher on real mpirun jobs (CPU ranks, gloo; one under torchrun): success, a failing rank, a
hang, a crash, and Ctrl-C. After each, no process of the job may be left."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.ranks import JOBS
from trtx.cli.launch.launcher import processes_of
from trtx.cli.launch.launcher import Launch

JOB = str(JOBS / "collective_job.py")
TRTX = shutil.which("trtx", path=str(Path(sys.executable).parent))
pytestmark = [pytest.mark.timeout(180), pytest.mark.multirank]


def launch(tmp_path, mode, timeout_s=120, launcher="mpirun"):
    log_dir = (tmp_path / "logs").resolve()
    result = Launch(4, [sys.executable, JOB, mode], timeout_s, log_dir, launcher=launcher).run()
    assert not processes_of(log_dir)
    return result


def test_four_ranks_all_reduce(tmp_path):
    result = launch(tmp_path, "ok")
    assert (result.exit_code, result.reason) == (0, "ok")
    assert sorted(p.name for p in result.log_dir.glob("rank-*.log")) == [f"rank-{r}.log" for r in range(4)]
    for r in result.ranks:
        assert f"rank {r.rank} of 4: sum 10" in r.log_text() and r.state == "exited 0"


def test_torchrun_runs_the_same_job(tmp_path):
    result = launch(tmp_path, "ok", launcher="torchrun")
    assert (result.exit_code, result.reason) == (0, "ok"), result.launcher_output[-2000:]
    for r in result.ranks:
        assert f"rank {r.rank} of 4: sum 10" in r.log_text()


def test_a_failing_rank_tears_the_job_down_fast(tmp_path):
    result = launch(tmp_path, "raise")
    done = time.time()
    assert result.reason == "failed" and result.first_failure == 2 and result.exit_code == 1
    assert "RuntimeError: rank 2 hit a bug" in result.ranks[2].traceback()
    failed_at = (result.log_dir / "rank-2.exit").stat().st_mtime
    assert done - failed_at < 5, f"teardown took {done - failed_at:.1f} s"
    assert {result.ranks[r].state for r in (0, 1, 3)} <= {"killed", "exited 1"}


def test_a_launcher_failing_before_any_rank_started_is_tried_again(tmp_path, monkeypatch):
    """mpirun's start-up (its PMIx server) fails now and then on a loaded host; a start-up
    failure is tried once more, and a lasting one is reported with both tries' output kept."""
    monkeypatch.setenv("PRTE_MCA_rmaps_default_mapping_policy", "bogus")     # mpirun refuses to map
    result = launch(tmp_path, "ok")
    assert (result.reason, result.tries) == ("launcher-error", 2) and result.exit_code != 0
    assert all(r.pid is None for r in result.ranks)
    for log in ("launcher-try1.log", "launcher.log"):
        assert "mapping directive is not recognized" in (result.log_dir / log).read_text()
    assert "2 tries" in result.summary()


def test_a_hang_reports_every_ranks_stack(tmp_path):
    result = launch(tmp_path, "skip", timeout_s=20)
    assert (result.reason, result.exit_code) == ("timeout", 124)
    for r in result.ranks:
        assert r.stack.startswith("Current thread") or "Thread 0x" in r.stack, f"rank {r.rank}: no stack"
    for r in (0, 2, 3):
        assert "in all_reduce" in result.ranks[r].stack
        assert result.ranks[r].where().endswith("in all_reduce")
    lines = Path(JOB).read_text().splitlines()
    skip_sleep = lines.index('if mode == "skip" and rank == 1:') + 2      # 1-based line of the sleep after it
    assert f'collective_job.py", line {skip_sleep} in <module>' in result.ranks[1].stack


@pytest.mark.skipif(shutil.which("py-spy", path=str(Path(sys.executable).parent)) is None,
                    reason="py-spy is not installed (it is in the test extra)")
def test_py_spy_reads_a_rank_that_cannot_answer_the_signal(tmp_path):
    result = launch(tmp_path, "deaf", timeout_s=20)
    assert result.reason == "timeout"
    assert "in all_reduce" in result.ranks[0].stack
    deaf = result.ranks[1].stack
    lines = Path(JOB).read_text().splitlines()
    sleep = lines.index('if mode == "deaf" and rank == 1:') + 2
    assert deaf.startswith("(from py-spy dump)") and f"<module> (collective_job.py:{sleep})" in deaf, deaf
    assert result.ranks[1].where() == f"collective_job.py:{sleep} in <module>"


def test_a_rank_dying_on_sigsegv_ends_the_job(tmp_path):
    result = launch(tmp_path, "segv")
    assert result.reason == "failed" and result.first_failure == 1
    assert result.ranks[1].state == "died on SIGSEGV" and result.exit_code != 0


@pytest.mark.parametrize("how,code", [("SIGINT", 130), ("SIGINT-from-a-script", 130), ("SIGTERM", 143)])
def test_ctrl_c_and_sigterm_end_every_rank(tmp_path, how, code):
    """Ctrl-C ends the job (exit 130), and so does SIGTERM (143), with its report; also when trtx
    was started by a shell script in the background, which hands it SIGINT ignored."""
    log_dir = (tmp_path / "logs").resolve()
    cmd = [TRTX, "launch", "-n", "4", "--quiet", "--log-dir", str(log_dir), "--", sys.executable, JOB, "sleep"]
    ignored = signal.SIG_IGN if how == "SIGINT-from-a-script" else signal.SIG_DFL
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, ignored))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(log_dir.glob("rank-*.pid"))) < 4:
        time.sleep(0.1)
    assert len(list(log_dir.glob("rank-*.pid"))) == 4
    os.kill(proc.pid, signal.SIGTERM if how == "SIGTERM" else signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == code, out.decode()
    assert b"interrupted" in out
    time.sleep(0.5)
    assert not processes_of(log_dir)


def test_ctrl_c_between_start_and_wait_still_tears_the_job_down(tmp_path):
    """A signal that lands after the ranks started but before the launcher watches them (the
    caller is still loading what it needs) is held back, then handled like any Ctrl-C. The caller
    takes Ctrl-C as every trtx command does (take_stop_signals): a pytest started in the background
    by a script hands its children SIGINT ignored, and the signal would be ignored."""
    log_dir = (tmp_path / "logs").resolve()
    script = f"""
import os, signal, sys, time
from trtx.cli.launch.launcher import Launch
from trtx.cli.main import take_stop_signals
take_stop_signals()
job = Launch(4, [sys.executable, {JOB!r}, "sleep"], 120, {str(log_dir)!r})
job.start()
os.kill(os.getpid(), signal.SIGINT)
time.sleep(1.0)                      # the window: the caller is busy elsewhere
result = job.wait()
print("result", result.reason, result.exit_code, flush=True)
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "result interrupted 130" in res.stdout, res.stdout + res.stderr
    time.sleep(0.5)
    assert not processes_of(log_dir)


def test_the_rendezvous_port_is_held_by_the_launcher_for_the_whole_job(tmp_path):
    """The port ranks rendezvous on is bound, listening, before any rank starts and until the job
    ends (no window in which another process can take it); every rank, rank 0 included, is a
    client of the launcher's store; the port is free again after the job."""
    job = Launch(2, [sys.executable, JOB, "ok"], 120, (tmp_path / "logs").resolve())
    port = job.rendezvous.port
    with pytest.raises(OSError):                 # taken: nobody else can bind it before rank 0 runs
        socket.create_server(("127.0.0.1", port))
    result = job.run()
    assert (result.reason, result.exit_code) == ("ok", 0), result.summary()
    for r in result.ranks:
        assert f"rank {r.rank} of 2: sum 3" in r.log_text()
    socket.create_server(("127.0.0.1", port)).close()   # released with the job


def test_mpirun_session_files_go_with_the_job_even_when_it_is_killed(tmp_path, monkeypatch):
    """A timed-out job's mpirun is killed and cannot remove its session folder; the launcher puts
    it in a folder of the job's own and removes that after teardown."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    result = launch(tmp_path, "skip", timeout_s=15)
    assert result.reason == "timeout"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"], "mpirun left files behind"
