"""Paged attention for the decode and verify steps as two Triton kernels (flash-decoding, split-KV).

Why. The SDPA decode path gathers every sequence's keys up to the longest one in the batch, or, in a
captured CUDA graph, up to the width of the block tables: a graph captured once for the model's full
length pays for the full length on every step. These kernels read the lengths from `seq_lens` on
the device, so their cost follows the real lengths (and, with a sliding window, the window), one
captured graph serves every length, and nothing is planned per shape on the host: no masks, no
gathered copies, no synchronisation.

How.
  stage 1  grid (S, Hkv, splits). One program takes one KV head of one sequence and all of its
           Q * G query rows (Q query tokens per sequence, G query heads per KV head), so each key and
           value is read once per KV head. The visible keys of the sequence, [lo, seq_len) with lo
           the lowest position any of its queries may see (0 without a window), are cut into
           `splits` equal runs rounded up to BLOCK_N keys; each program walks its run BLOCK_N keys
           at a time, finds every key's slot through the block table (any block size), and keeps an
           online softmax in fp32, masked per query row by its own position (causal inside a verify
           chunk, plus the window). It writes its normalised partial output and its log-sum-exp;
           a run past the length (or a sequence of length 0) writes lse = -inf.
  stage 2  grid (S*Q, H). Merges the partials of a query row and head, weighted by their
           log-sum-exps, into the output in q's dtype (zeros when no split saw a key).
The split count is a function of the batch shape only (`num_splits_for`), so a captured graph stays
valid for every length; workspace is allocated per call, which CUDA-graph capture allows.
The idea follows SGLang's Triton decode attention backend and vLLM's Triton flash-decoding kernel;
the code is this project's own.

Log-sum-exps are kept in base 2 (scores are pre-multiplied by log2(e), exp2 in the loop); stage 2
reads them in the same base.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

MAX_SPLITS = 16
CPU_SPLITS = 2          # off the GPU (Triton's interpreter) every program costs time: two still exercise the merge
_LOG2E = 1.4426950408889634


# Integer arguments that change from step to step (the batch's table width, the window, the split
# count) are not specialised on: a new value must never compile a new kernel in the middle of serving.
@triton.jit(do_not_specialize=["window", "block_size", "stride_tb", "q_len"])
def _split_kv_kernel(q_ptr, cache_ptr, tables_ptr, lens_ptr, part_o_ptr, part_lse_ptr,
                     scale_log2, window, block_size, kv_heads, q_len,
                     stride_qt, stride_qh, stride_cb, stride_co, stride_ch, stride_tb, stride_ls,
                     stride_pt, stride_ph, stride_ps, stride_lt, stride_lh,
                     HEAD_DIM: tl.constexpr, GROUP: tl.constexpr,
                     HAS_WINDOW: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    seq = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    num_splits = tl.num_programs(2)

    seq_len = tl.maximum(tl.load(lens_ptr + seq * stride_ls).to(tl.int32), 0)

    # Row r of this program: query token j = r // GROUP of the sequence, query head kvh*GROUP + r % GROUP.
    rows = tl.arange(0, BLOCK_M)
    row_ok = rows < q_len * GROUP
    j = rows // GROUP
    head = kvh * GROUP + rows % GROUP
    token = seq * q_len + j
    pos = seq_len - q_len + j                                      # the query's position in its sequence
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q = tl.load(q_ptr + token[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    # The keys some query of this sequence may see: [kv_lo, seq_len); this split's run of them.
    if HAS_WINDOW:
        kv_lo = tl.maximum(seq_len - q_len + 1 - window, 0)
    else:
        kv_lo = 0
    run = tl.cdiv(tl.cdiv(seq_len - kv_lo, num_splits), BLOCK_N) * BLOCK_N
    lo = kv_lo + split * run
    hi = tl.minimum(lo + run, seq_len)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    n = tl.arange(0, BLOCK_N)
    k_base = cache_ptr + kvh * stride_ch
    v_base = cache_ptr + (kv_heads + kvh) * stride_ch
    table = tables_ptr + seq * stride_tb
    for start in range(lo, hi, BLOCK_N):
        t = start + n
        t_ok = t < hi
        block = tl.load(table + t // block_size, mask=t_ok, other=0).to(tl.int64)
        slot = block * stride_cb + (t % block_size).to(tl.int64) * stride_co
        kv_mask = t_ok[:, None] & d_ok[None, :]                     # never read past the run: no garbage
        k = tl.load(k_base + slot[:, None] + d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + slot[:, None] + d[None, :], mask=kv_mask, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        if IEEE:
            qk = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            qk = tl.dot(q, tl.trans(k))
        qk = qk * scale_log2
        seen = t_ok[None, :] & (t[None, :] <= pos[:, None])
        if HAS_WINDOW:
            seen = seen & (t[None, :] > pos[:, None] - window)
        qk = tl.where(seen, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)         # a row that has seen nothing yet
        alpha = tl.exp2(m_i - m_use)
        p = tl.exp2(qk - m_use[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if IEEE:
            pv = tl.dot(p.to(v.dtype), v, input_precision="ieee")
        else:
            pv = tl.dot(p.to(v.dtype), v)
        acc = acc * alpha[:, None] + pv
        m_i = m_new

    some = l_i > 0.0
    l_safe = tl.where(some, l_i, 1.0)
    lse = tl.where(some, m_i + tl.log2(l_safe), float("-inf"))
    o = acc / l_safe[:, None]
    tl.store(part_o_ptr + token[:, None] * stride_pt + head[:, None] * stride_ph + split * stride_ps + d[None, :],
             o, mask=row_ok[:, None] & d_ok[None, :])
    tl.store(part_lse_ptr + token * stride_lt + head * stride_lh + split, lse, mask=row_ok)


@triton.jit(do_not_specialize=["num_splits"])
def _merge_kernel(part_o_ptr, part_lse_ptr, out_ptr, num_splits,
                  stride_pt, stride_ph, stride_ps, stride_lt, stride_lh, stride_ot, stride_oh,
                  HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    token = tl.program_id(0)
    head = tl.program_id(1)
    sp = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    lse = tl.load(part_lse_ptr + token * stride_lt + head * stride_lh + sp, mask=sp < num_splits,
                  other=float("-inf"))
    live = lse > float("-inf")
    m = tl.max(lse, 0)
    m_use = tl.where(m == float("-inf"), 0.0, m)
    w = tl.where(live, tl.exp2(lse - m_use), 0.0)
    o = tl.load(part_o_ptr + token * stride_pt + head * stride_ph + sp[:, None] * stride_ps + d[None, :],
                mask=live[:, None] & d_ok[None, :], other=0.0)
    total = tl.sum(w, 0)
    res = tl.sum(w[:, None] * o, 0) / tl.where(total > 0.0, total, 1.0)
    tl.store(out_ptr + token * stride_ot + head * stride_oh + d, res.to(out_ptr.dtype.element_ty), mask=d_ok)


# Triton's interpreter (TRITON_INTERPRET=1, decided when triton.jit decorates) multiplies bf16 dot
# operands as their raw 16-bit patterns (Triton 3.9): there the kernel upcasts them to fp32 first.
_INTERPRETED = not isinstance(_split_kv_kernel, triton.runtime.JITFunction)


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_splits_for(num_seqs: int, kv_heads: int, device) -> int:
    """How many KV splits to launch: enough stage-1 programs to give every SM about two, at most
    MAX_SPLITS; CPU_SPLITS off the GPU. A function of the batch shape only, never of the lengths, so
    a captured graph stays valid for every length."""
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_SPLITS
    index = device.index if device.index is not None else torch.cuda.current_device()
    programs = max(num_seqs * kv_heads, 1)
    return max(1, min(MAX_SPLITS, triton.cdiv(2 * _sm_count(index), programs)))


def _pow2(n: int, least: int = 16) -> int:
    return max(least, triton.next_power_of_2(n))


def paged_decode_attention(q, kv_cache, block_tables, seq_lens, q_len: int, scale: float,
                           window: int | None = None, num_splits: int | None = None, out=None) -> torch.Tensor:
    """q [S*Q, H, D] -> [S*Q, H, D] (same dtype as q; written into `out` when given).

    kv_cache [num_blocks, block_size, 2*Hkv, D] (keys in heads [0, Hkv), values in [Hkv, 2*Hkv)), the
    new tokens already written; block_tables [S, W] (entries past a sequence: any valid block, e.g.
    the null block 0, never read); seq_lens [S] keys per sequence including its q_len new ones.
    Query j of sequence s sits at position seq_lens[s] - q_len + j and sees keys t <= its position
    (and t > position - window). A sequence with seq_lens <= 0 gives zeros."""
    rows, num_heads, head_dim = q.shape
    if q_len < 1 or rows % q_len:
        raise ValueError(f"q has {rows} rows, not a multiple of q_len={q_len}")
    seqs = rows // q_len
    block_size, kv_heads = kv_cache.shape[1], kv_cache.shape[2] // 2
    if kv_cache.shape[2] != 2 * kv_heads or kv_cache.shape[3] != head_dim or num_heads % kv_heads:
        raise ValueError(f"kv_cache {tuple(kv_cache.shape)} does not fit q {tuple(q.shape)}")
    if block_tables.shape[0] < seqs or seq_lens.shape[0] < seqs:
        raise ValueError(f"{seqs} sequences, but block_tables {tuple(block_tables.shape)}, "
                         f"seq_lens {tuple(seq_lens.shape)}")
    if out is None:
        out = torch.empty_like(q)
    elif out.shape != q.shape or out.dtype != q.dtype:
        raise ValueError(f"out {tuple(out.shape)} {out.dtype} does not match q {tuple(q.shape)} {q.dtype}")
    if seqs == 0:
        return out
    if q.stride(-1) != 1:
        q = q.contiguous()
    if block_tables.stride(1) != 1:        # the kernel walks a table's columns with stride 1
        block_tables = block_tables.contiguous()
    if kv_cache.stride(-1) != 1 or out.stride(-1) != 1:
        raise ValueError("kv_cache and out need a contiguous last dimension")
    if num_splits is None:
        num_splits = num_splits_for(seqs, kv_heads, q.device)
    if not 1 <= num_splits <= MAX_SPLITS:
        raise ValueError(f"num_splits={num_splits} outside [1, {MAX_SPLITS}]")

    group = num_heads // kv_heads
    block_m = _pow2(q_len * group)
    block_d = _pow2(head_dim)
    small = block_m * block_d <= 64 * 128
    block_n, warps = (64, 4) if small else (32, 8)           # keep the tiles within registers
    upcast = _INTERPRETED and q.dtype == torch.bfloat16
    part_o = torch.empty((rows, num_heads, num_splits, head_dim), dtype=torch.float32, device=q.device)
    part_lse = torch.empty((rows, num_heads, num_splits), dtype=torch.float32, device=q.device)

    _split_kv_kernel[(seqs, kv_heads, num_splits)](
        q, kv_cache, block_tables, seq_lens, part_o, part_lse,
        float(scale) * _LOG2E, int(window) if window else 0, block_size, kv_heads, q_len,
        q.stride(0), q.stride(1), kv_cache.stride(0), kv_cache.stride(1), kv_cache.stride(2),
        block_tables.stride(0), seq_lens.stride(0),
        part_o.stride(0), part_o.stride(1), part_o.stride(2), part_lse.stride(0), part_lse.stride(1),
        HEAD_DIM=head_dim, GROUP=group, HAS_WINDOW=bool(window),
        IEEE=q.dtype == torch.float32 or upcast, UPCAST=upcast, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        num_warps=warps, num_stages=2)
    _merge_kernel[(rows, num_heads)](
        part_o, part_lse, out, num_splits,
        part_o.stride(0), part_o.stride(1), part_o.stride(2), part_lse.stride(0), part_lse.stride(1),
        out.stride(0), out.stride(1),
        HEAD_DIM=head_dim, BLOCK_S=_pow2(num_splits, 2), BLOCK_D=block_d, num_warps=2)
    return out


__all__ = ["paged_decode_attention", "num_splits_for", "MAX_SPLITS"]
