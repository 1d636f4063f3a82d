"""A rank program for the launcher tests: `python collective_job.py MODE`.

ok        every rank all-reduces and exits 0
raise     rank 2 raises before the all-reduce
skip      rank 1 skips the all-reduce its peers wait in (sleeps instead)
deaf      as skip, but rank 1 blocks SIGUSR1 first, so only py-spy can read its stack
segv      rank 1 kills itself with SIGSEGV
sleep     every rank sleeps (for Ctrl-C)
"""
import os
import signal
import sys
import time

if sys.argv[1] == "deaf" and os.environ["RANK"] == "1":   # before any thread starts, so every thread inherits it
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

mode = sys.argv[1]
if mode == "sleep":
    print("sleeping", flush=True)
    time.sleep(600)
dist.init_process_group("gloo")
rank = dist.get_rank()
t = torch.ones(1) * (rank + 1)
if mode == "raise" and rank == 2:
    raise RuntimeError("rank 2 hit a bug")
if mode == "segv" and rank == 1:
    os.kill(os.getpid(), signal.SIGSEGV)
if mode == "deaf" and rank == 1:
    time.sleep(600)
if mode == "skip" and rank == 1:
    time.sleep(600)
dist.all_reduce(t)
print(f"rank {rank} of {dist.get_world_size()}: sum {t.item():.0f}", flush=True)
dist.destroy_process_group()
