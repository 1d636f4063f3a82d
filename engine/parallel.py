"""Tensor, pipeline and attention-data parallelism: which share of the model each rank holds, and
the process groups and collectives that join the shares.

Ranks are laid out tensor-parallel first: rank = pp_rank * tp_size + tp_rank, so the tp_size ranks
of one pipeline stage are neighbours (on a GPU node, one NVLink island). Under tp/pp every rank
runs the same engine loop with the same scheduler state (SPMD); the last stage samples, and what
it decided reaches the other stages through one broadcast a step (engine/pipeline.py). Under
attention DP the tp group's ranks each serve their own requests instead (AttentionDataParallel).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .collectives import Collectives
from .device import dist_backend, share_cpu_cores
from .errors import ConfigError


@dataclass(frozen=True)
class RankMapping:
    tp_size: int = 1
    pp_size: int = 1
    rank: int = 0
    attention_dp: bool = False     # attention data parallel across the tp group, MLP tensor parallel

    def __post_init__(self):
        if self.tp_size < 1 or self.pp_size < 1:
            raise ConfigError(f"tp and pp sizes must be >= 1, got tp={self.tp_size} pp={self.pp_size}")
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} outside a world of {self.world_size}")

    @property
    def world_size(self) -> int:
        return self.tp_size * self.pp_size

    @property
    def tp_rank(self) -> int:
        return self.rank % self.tp_size

    @property
    def pp_rank(self) -> int:
        return self.rank // self.tp_size

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp_size - 1

    @property
    def prev_rank(self) -> int:
        """The rank holding the same tensor shard in the previous stage."""
        return self.rank - self.tp_size

    @property
    def next_rank(self) -> int:
        return self.rank + self.tp_size

    @property
    def last_stage_root(self) -> int:
        """The rank whose sampling decisions every rank adopts."""
        return (self.pp_size - 1) * self.tp_size

    def tp_group_ranks(self, pp_rank: int) -> list[int]:
        return list(range(pp_rank * self.tp_size, (pp_rank + 1) * self.tp_size))


def split_evenly(n: int, parts: int, index: int) -> range:
    """Part `index` of range(n) cut into `parts` contiguous pieces whose sizes differ by at most
    one, the larger ones first (layers over stages, query heads over ranks, micro-batches)."""
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return range(start, start + base + (index < extra))


def stage_layers(num_layers: int, pp_size: int, pp_rank: int) -> range:
    """The decoder layers a pipeline stage runs: an even split, the remainder to the first stages."""
    if pp_size > num_layers:
        raise ConfigError(f"pipeline parallel size {pp_size} is larger than the model's {num_layers} layers")
    return split_evenly(num_layers, pp_size, pp_rank)


@dataclass(frozen=True)
class HeadShard:
    """The attention heads a tensor-parallel rank computes: query heads [q_start, q_start+q_count),
    key/value heads [kv_start, kv_start+kv_count)."""
    q_start: int
    q_count: int
    kv_start: int
    kv_count: int


def head_shard(num_heads: int, num_kv_heads: int, tp_size: int, tp_rank: int) -> HeadShard:
    """Split attention heads across tp ranks, keeping each query head with its key/value head.

    tp_size <= kv heads: each rank takes kv_heads / tp_size kv heads and all their query heads.
    tp_size  > kv heads: each kv head is replicated on tp_size / kv_heads ranks, which split its
    group of query heads between them (unevenly if need be, the remainder to the first ones), so a
    6-query / 2-kv-head model still runs on 4 ranks (query heads 2+1 | 2+1)."""
    if num_kv_heads >= tp_size:
        if num_kv_heads % tp_size:
            raise ConfigError(f"{num_kv_heads} key/value heads cannot be split across tp size {tp_size} "
                             f"(it must divide them, or be a multiple of them)")
        kv = num_kv_heads // tp_size
        group = num_heads // num_kv_heads
        return HeadShard(tp_rank * kv * group, kv * group, tp_rank * kv, kv)
    if tp_size % num_kv_heads:
        raise ConfigError(f"tp size {tp_size} is neither a divisor nor a multiple of the {num_kv_heads} key/value heads")
    per_kv = tp_size // num_kv_heads
    group = num_heads // num_kv_heads
    if group < per_kv:
        raise ConfigError(f"tp size {tp_size} leaves some ranks without a query head "
                         f"({num_heads} query heads, {num_kv_heads} key/value heads)")
    kv_head, sub = divmod(tp_rank, per_kv)
    mine = split_evenly(group, per_kv, sub)
    return HeadShard(kv_head * group + mine.start, len(mine), kv_head, 1)


def check_layout(cfg, tp_size: int, pp_size: int, attention_dp: bool = False) -> None:
    """Raise ValueError, in one line, if the model cannot be split tp x pp ways (checked for every
    rank, before any process starts or any process group exists)."""
    if attention_dp and pp_size > 1:
        raise ConfigError("attention data parallelism runs on one pipeline stage (pp 1)")
    if not attention_dp:          # under attention DP every rank holds all heads
        for rank in range(tp_size):
            head_shard(cfg.num_attention_heads, cfg.num_key_value_heads, tp_size, rank)
    even_slice(cfg.intermediate_size, tp_size, 0, "intermediate_size")
    stage_layers(cfg.num_hidden_layers, pp_size, 0)


def even_slice(size: int, tp_size: int, tp_rank: int, what: str) -> tuple[int, int]:
    """(start, count) of an evenly split dimension."""
    if size % tp_size:
        raise ConfigError(f"{what} of size {size} is not divisible by tp size {tp_size}")
    count = size // tp_size
    return tp_rank * count, count


class TensorParallel:
    """A rank's tensor-parallel group: its rank and size, and the all-reduce that sums row-parallel
    partial outputs (a no-op on one rank)."""

    def __init__(self, rank: int = 0, size: int = 1, comm: Collectives | None = None):
        self.rank, self.size, self.comm = rank, size, comm

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        return self.comm.all_reduce(x) if self.size > 1 else x


class AttentionDataParallel:
    """Attention data parallelism: each rank attends over its own requests' tokens with its own KV
    cache, and the MLP, split tensor-parallel across the group, runs on the tokens of all ranks.
    So every forward begins with every rank's token count (`begin`), and each MLP gathers the
    group's tokens, computes its column share for all of them, all-reduces and keeps its own rows.
    A rank with nothing scheduled still runs a (dummy) forward: it must join every collective."""

    def __init__(self, rank: int, size: int, comm: Collectives):
        self.rank, self.size, self.comm = rank, size, comm
        self.counts: list[int] = []

    def begin(self, num_tokens: int, graph_size: int = 0) -> int:
        """Every forward starts here, on every rank: exchange token counts and graph proposals
        (the padded decode size this rank could replay, 0 when it needs an eager forward). Returns
        the agreed graph size: the largest proposal when every rank can replay, else 0, eager for
        all. A graph's collectives have fixed sizes, so no rank may choose alone."""
        got = self.comm.all_gather(torch.tensor([num_tokens, graph_size], device=self.comm.device)).tolist()
        self.fix([tokens for tokens, _ in got])
        proposals = [size for _, size in got]
        return max(proposals) if min(proposals) > 0 else 0

    def fix(self, counts: list[int]) -> None:
        """Every rank's token count for the coming forward (known already when replaying a graph:
        every rank's padded size)."""
        self.counts, self.offset = counts, sum(counts[:self.rank])

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """[T_rank, d] -> [sum of T, d], rank order."""
        longest = max(self.counts)
        padded = torch.cat([x, x.new_zeros(longest - x.shape[0], x.shape[1])]) if x.shape[0] < longest else x
        every = self.comm.all_gather(padded)
        return torch.cat([every[r, :n] for r, n in enumerate(self.counts)])

    def own(self, y: torch.Tensor) -> torch.Tensor:
        return y[self.offset:self.offset + self.counts[self.rank]]


class Parallel:
    """The rank's place in the job (RankMapping) and its process groups.

    `Parallel.single()` is the one-rank case with no torch.distributed at all; `Parallel.init`
    joins the job the launcher started (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment)."""

    def __init__(self, mapping: RankMapping, device: torch.device, tp: TensorParallel,
                 world: Collectives | None = None):
        self.mapping, self.device, self.tp, self.world = mapping, device, tp, world
        self.attention_dp_group = AttentionDataParallel(tp.rank, tp.size, tp.comm) if mapping.attention_dp else None

    @classmethod
    def single(cls, device: torch.device) -> "Parallel":
        return cls(RankMapping(), device, TensorParallel())

    @classmethod
    def init(cls, tp_size: int, pp_size: int, select_device, attention_dp: bool = False) -> "Parallel":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world != tp_size * pp_size:
            raise ConfigError(f"tp {tp_size} x pp {pp_size} needs {tp_size * pp_size} ranks, but this job has "
                             f"{world} (start it with `trtx launch -n {tp_size * pp_size} -- ...`)")
        mapping = RankMapping(tp_size, pp_size, int(os.environ.get("RANK", "0")), attention_dp)
        device = select_device(int(os.environ.get("LOCAL_RANK", "0")))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        share_cpu_cores(device, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
        if not dist.is_initialized():
            dist.init_process_group(dist_backend(device), rank=mapping.rank, world_size=world)
        # Every rank creates every group, in the same order, as new_group requires.
        mine = None
        for stage in range(pp_size):
            group = dist.new_group(mapping.tp_group_ranks(stage))
            if stage == mapping.pp_rank:
                mine = group
        tp = TensorParallel(mapping.tp_rank, tp_size, Collectives(mine, tp_size, device))
        return cls(mapping, device, tp, Collectives(dist.group.WORLD, world, device))

    @property
    def distributed(self) -> bool:
        return self.mapping.world_size > 1

    def agree_min(self, value: int) -> int:
        """The smallest of every rank's value (e.g. KV cache blocks, which must match everywhere)."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.long, device=self.device)
        return int(self.world.all_reduce(t, op=dist.ReduceOp.MIN).item())

    def send_next(self, tensor: torch.Tensor):
        """Hand a tensor to the next stage without waiting: the returned work is waited on later,
        so this stage can start its next micro-batch meanwhile."""
        return dist.isend(tensor.contiguous(), self.mapping.next_rank)

    def recv_prev(self, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        out = torch.empty(shape, dtype=dtype, device=self.device)
        dist.recv(out, self.mapping.prev_rank)
        return out

    def broadcast_from_last_stage(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.world.broadcast(tensor, self.mapping.last_stage_root)

    def shutdown(self) -> None:
        """Leave the job. First a barrier: no rank closes its connections while a peer is still
        inside the last collective. Then the groups are destroyed with no reference to them left
        in this process, so their backend threads stop here and now, not during the interpreter's
        exit, where a backend thread that still needs the GIL aborts the whole process."""
        if not dist.is_initialized():
            return
        dist.barrier()
        for comm in (self.tp.comm, self.world):
            if comm is not None:
                comm.group = None
        dist.destroy_process_group()
