"""Building blocks of the decoder: RMSNorm, rotary embedding, and linears that know how to load their
share of a checkpoint tensor.

Each linear holds the slice of the full weight that its tensor-parallel rank owns, and its
`load(name_shard, tensor)` cuts that slice from a full checkpoint tensor. Fused projections
(q/k/v, gate/up) are stacked at load time so a forward runs one matmul instead of three.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float, dtype: torch.dtype):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size, dtype=dtype), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:        # one fused call: the per-op cost dominates small batches
            return F.rms_norm(x, x.shape[-1:], self.weight, self.eps)
        # Normalise in fp32 and cast back before the weight, as the reference implementation does.
        return self.weight * F.rms_norm(x.float(), x.shape[-1:], eps=self.eps).to(x.dtype)

    def load(self, shard: str | None, tensor: torch.Tensor) -> None:
        _copy_checked(self.weight, tensor)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for every position, computed once in fp32 from the (scaled) inverse frequencies."""

    def __init__(self, inv_freq: torch.Tensor, max_positions: int):
        super().__init__()
        freqs = torch.arange(max_positions, dtype=torch.float32)[:, None] * inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def tables(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of each token's position, [T, 1, head_dim]: looked up once per forward."""
        cos, sin = self.cos.index_select(0, positions), self.sin.index_select(0, positions)
        return cos.to(dtype)[:, None, :], sin.to(dtype)[:, None, :]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [tokens, heads, head_dim], rotate-half layout (the HF checkpoint convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class ShardedLinear(nn.Module):
    """y = x W^T (+ b) where W is this rank's slice of a (possibly stacked) checkpoint weight.

    `parts` lists the stacked sub-matrices of the output dimension as (name, full_rows); each is
    split evenly across `tp_size` ranks along `split_dim` (0: column parallel, output rows split;
    1: row parallel, input columns split, output needs an all-reduce done by the caller).
    """

    def __init__(self, in_features: int, parts: list[tuple[str | None, int]], bias: bool,
                 dtype: torch.dtype, split_dim: int = 0, tp_rank: int = 0, tp_size: int = 1):
        super().__init__()
        self.split_dim, self.tp_rank, self.tp_size = split_dim, tp_rank, tp_size
        if split_dim == 0:
            for name, rows in parts:
                if rows % tp_size:
                    raise ValueError(f"{name or 'output'} size {rows} is not divisible by tp size {tp_size}")
            local_parts = [(name, rows // tp_size) for name, rows in parts]
            local_in = in_features
        else:
            if in_features % tp_size:
                raise ValueError(f"input size {in_features} is not divisible by tp size {tp_size}")
            local_parts = list(parts)
            local_in = in_features // tp_size
        self.offsets: dict[str | None, tuple[int, int]] = {}
        start = 0
        for name, rows in local_parts:
            self.offsets[name] = (start, rows)
            start += rows
        # Stored transposed ([in, out] in memory, presented as the usual [out, in] view): CPU GEMMs
        # of a few rows, which is what decoding runs, are about twice as fast on that layout.
        self.weight = nn.Parameter(torch.empty(local_in, start, dtype=dtype).t(), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(start, dtype=dtype), requires_grad=False) if bias else None
        # A row-parallel output is a partial sum that the caller all-reduces: only one rank may add
        # the bias, or it would be counted tp_size times.
        self.local_bias = self.bias if (split_dim == 0 or tp_rank == 0) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.local_bias)

    def load(self, shard: str | None, tensor: torch.Tensor, is_bias: bool = False) -> None:
        start, rows = self.offsets[shard]
        target = (self.bias if is_bias else self.weight).narrow(0, start, rows)
        if self.tp_size > 1:
            if not (is_bias and self.split_dim == 1):      # a row-parallel bias is kept whole
                dim = 0 if self.split_dim == 0 else 1
                size = tensor.shape[dim] // self.tp_size
                tensor = tensor.narrow(dim, self.tp_rank * size, size)
        _copy_checked(target, tensor)


class ShardedEmbedding(nn.Module):
    """Token embedding; under tensor parallelism the caller decides whether it is split (later)."""

    def __init__(self, vocab_size: int, hidden: int, dtype: torch.dtype):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, hidden, dtype=dtype), requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)

    def load(self, shard: str | None, tensor: torch.Tensor) -> None:
        _copy_checked(self.weight, tensor)


class ShapeMismatch(ValueError):
    pass


def _copy_checked(target: torch.Tensor, tensor: torch.Tensor) -> None:
    if tuple(target.shape) != tuple(tensor.shape):
        raise ShapeMismatch(f"expected shape {tuple(target.shape)}, checkpoint has {tuple(tensor.shape)}")
    target.copy_(tensor)
