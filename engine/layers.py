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

    def forward(self, x: torch.Tensor, triton: bool = False) -> torch.Tensor:
        return self.add(x, None, triton)[0]

    def add(self, x: torch.Tensor, residual: torch.Tensor | None,
            triton: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(norm(x + residual), x + residual); without a residual (norm(x), x). triton: one fused
        kernel (engine/triton_fused.py) for what the torch ops below do in four to six."""
        kernels = _fused_kernels(x, triton)
        if kernels:
            return kernels.add_rms_norm(x, residual, self.weight, self.eps)
        if residual is not None:
            x = x + residual
        if x.dtype == torch.float32:        # one fused call: the per-op cost dominates small batches
            return F.rms_norm(x, x.shape[-1:], self.weight, self.eps), x
        # Normalise in fp32 and cast back before the weight, as the reference implementation does.
        return self.weight * F.rms_norm(x.float(), x.shape[-1:], eps=self.eps).to(x.dtype), x

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


def _fused_kernels(x: torch.Tensor, triton: bool):
    """engine/triton_fused.py when its kernels replace the torch ops: asked for (the rank's Triton
    backend) and x's dtype one they round as torch does; else None."""
    if not triton:
        return None
    from . import triton_fused     # triton: imported only where it runs
    return triton_fused if triton_fused.supports(x.dtype) else None


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [tokens, heads, head_dim], rotate-half layout (the HF checkpoint convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def rotary_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, triton: bool = False) -> None:
    """apply_rotary written back into x (a view: the rows may be strided); triton: one kernel."""
    kernels = _fused_kernels(x, triton)
    if kernels:
        kernels.rotary_(x, cos, sin)
    else:
        x.copy_(apply_rotary(x, cos, sin))


def silu_and_mul(gate_up: torch.Tensor, triton: bool = False) -> torch.Tensor:
    """[T, 2 * inter] (gate, then up) -> silu(gate) * up; triton: one kernel."""
    kernels = _fused_kernels(gate_up, triton)
    if kernels:
        return kernels.silu_and_mul(gate_up)
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


class ShardedLinear(nn.Module):
    """y = x W^T (+ b), W being this rank's share of a (possibly stacked) checkpoint weight.

    out_parts: the stacked sub-matrices of the output dimension, (name, full_rows, start, count):
        this rank holds rows [start, start + count) of checkpoint tensor `name` (column parallel
        when count < full_rows; `whole(name, rows)` for all of them).
    in_slice: (start, count) of the input columns this rank holds. Row parallel: the output is a
        partial sum that the caller all-reduces. None: all columns.
    add_bias: False on every rank but one of a row-parallel linear, or the bias would be summed
        tp_size times.
    The weight is stored transposed ([in, out] in memory, presented as the usual [out, in] view):
    CPU GEMMs of a few rows run about twice as fast on that layout, which is what decoding does.
    """

    def __init__(self, in_features: int, out_parts: list[tuple[str | None, int, int, int]], bias: bool,
                 dtype: torch.dtype, in_slice: tuple[int, int] | None = None, add_bias: bool = True):
        super().__init__()
        self.in_features, self.in_slice = in_features, in_slice
        local_in = in_slice[1] if in_slice else in_features
        self.parts: dict[str | None, tuple[int, int, int, int]] = {}     # name -> (full, start, count, offset)
        offset = 0
        for name, full, start, count in out_parts:
            self.parts[name] = (full, start, count, offset)
            offset += count
        self.weight = nn.Parameter(torch.empty(local_in, offset, dtype=dtype).t(), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(offset, dtype=dtype), requires_grad=False) if bias else None
        self.local_bias = self.bias if add_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.local_bias)

    def load(self, shard: str | None, tensor: torch.Tensor, is_bias: bool = False) -> None:
        full, start, count, offset = self.parts[shard]
        expected = (full,) if is_bias else (full, self.in_features)
        if tuple(tensor.shape) != expected:
            raise ShapeMismatch(f"expected shape {expected}, checkpoint has {tuple(tensor.shape)}")
        tensor = tensor.narrow(0, start, count)
        if self.in_slice and not is_bias:
            tensor = tensor.narrow(1, *self.in_slice)
        _copy_checked((self.bias if is_bias else self.weight).narrow(0, offset, count), tensor)


def whole(name: str | None, rows: int) -> tuple[str | None, int, int, int]:
    """An output part held in full (replicated on every tensor-parallel rank)."""
    return (name, rows, 0, rows)


class TokenEmbedding(nn.Module):
    """Token embedding, replicated on every tensor-parallel rank (a vocabulary split would cost an
    all-reduce per forward; the models this engine serves have small vocabularies or few ranks)."""

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
