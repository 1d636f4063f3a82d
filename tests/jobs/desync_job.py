"""A rank program with a collective behind a per-rank condition (the bug of invariant 2):
`python desync_job.py check|nocheck`. Every rank all-reduces, then rank 0 alone gathers its
statistics, then every rank all-reduces again. With the desync detector on (check) every rank
must raise CollectiveDesync naming both call sites; without it the ranks mismatch silently."""
import sys

import torch
import torch.distributed as dist

from trtx.engine.collectives import Collectives

dist.init_process_group("gloo")
rank = dist.get_rank()
comm = Collectives(dist.group.WORLD, dist.get_world_size(), torch.device("cpu"), check=sys.argv[1] == "check")
t = torch.ones(1)
comm.all_reduce(t)
if rank == 0:
    comm.all_gather_object({"rank": rank, "stats": [1, 2, 3]})      # only rank 0 gets here
comm.all_reduce(t)
print(f"rank {rank}: finished with {t.item()}", flush=True)
dist.destroy_process_group()
