"""What each rank runs first: `python -S .../rank_entry.py LOG_DIR -- CMD ...` (started by the
launcher under mpirun, torchrun or srun). Standard library only, so it starts in milliseconds.

It finds the rank from whichever launcher started it, sets the environment torch.distributed
expects, sends the rank's output (unbuffered) to LOG_DIR/rank-N.log, and runs CMD as a child:
  - LOG_DIR/rank-N.pid holds CMD's pid (where the launcher sends SIGUSR1 for a stack dump);
  - LOG_DIR/rank-N.exit holds CMD's exit code, or -SIGNAL, the moment it ends;
  - CMD and this process die with their parent (PDEATHSIG), so no rank outlives the job.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

_RANK_VARS = [("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
              ("PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK"),
              ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
              ("RANK", "WORLD_SIZE", "LOCAL_RANK")]


def die_with_parent() -> None:
    """In a child (or before exec): get SIGKILL when the parent dies, however it dies (Linux).
    The same as trtx.cli.procs.die_with_parent: run by path under -S, this program cannot import
    the package, so it keeps a copy of its own."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except OSError:
        pass


def rank_file(log_dir, rank: int | str, kind: str) -> str:
    """LOG_DIR/rank-N.{log,pid,exit}: the files through which a rank and the launcher talk
    (rank "*" gives the glob pattern of all of them)."""
    return os.path.join(log_dir, f"rank-{rank}.{kind}")


def rank_env(environ) -> tuple[int, int, int]:
    for rank, size, local in _RANK_VARS:
        if rank in environ:
            return int(environ[rank]), int(environ.get(size, 1)), int(environ.get(local, environ[rank]))
    return 0, 1, 0


def main(argv: list[str]) -> int:
    log_dir, sep, *cmd = argv
    if sep != "--" or not cmd:
        print("usage: python -S rank_entry.py LOG_DIR -- CMD ...", file=sys.stderr)
        return 2
    die_with_parent()
    rank, world, local = rank_env(os.environ)
    env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local),
               LOCAL_WORLD_SIZE=os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", str(world)),
               PYTHONUNBUFFERED="1", TRTX_RANK_LOG_DIR=log_dir)
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    # Every Python CMD registers a stack dump of all its threads on SIGUSR1 (see launcher.py).
    site = os.path.join(log_dir, ".site")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
    if env.get("TRTX_GPUS_PER_NODE") and "CUDA_VISIBLE_DEVICES" not in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = str(local % int(env["TRTX_GPUS_PER_NODE"]))   # one GPU per rank
    log = os.open(rank_file(log_dir, rank, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    # fork + exec by hand rather than subprocess: importing subprocess alone costs this rank ~13 ms.
    pid = os.fork()
    if pid == 0:
        try:
            die_with_parent()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.execvpe(cmd[0], cmd, env)
        except OSError as e:
            os.write(2, f"trtx: cannot start {cmd[0]}: {e}\n".encode())
        os._exit(127)
    with open(rank_file(log_dir, rank, "pid"), "w") as f:
        f.write(str(pid))
    for sig in (signal.SIGTERM, signal.SIGINT):                # mpirun's teardown reaches CMD too
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])    # -N when it died on signal N
    with open(rank_file(log_dir, rank, "exit"), "w") as f:
        f.write(str(code))
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
