"""Grouped-query attention over a paged KV cache.

The model runs on a flat batch: the scheduled tokens of every sequence side by side, [T, ...],
decode sequences (Q new tokens each: 1 when decoding, 1 + K when verifying K drafts) first, then
prefill chunks. Each layer writes the new keys and values into their cache slots, then attends in
two parts:
  decode   one call for every decode sequence, reading its keys through its block table up to
           its length (seq_lens); two backends, chosen once per rank (device.attention_backend):
             triton  a split-KV flash-decoding kernel (engine/triton_decode.py): its cost follows
                     the real lengths, and nothing in it depends on a length's shape, so one
                     captured CUDA graph serves every length up to the model's;
             sdpa    the keys gathered into a dense tensor and one masked SDPA call (CPU; on CUDA
                     only where Triton is missing, padded to the tables' width in a graph);
  prefill  one SDPA call per chunk, its queries against its own cached prefix plus itself, causal.
Splitting them keeps a long prompt from padding every decode sequence to its length.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class DecodeMeta:
    block_tables: torch.Tensor           # [S, W] block ids, padded with the null block
    seq_lens: torch.Tensor               # [S] keys of each sequence after this step (its Q tokens included)
    q_len: int                           # Q: query tokens per sequence
    masked: bool                         # False: every query sees every key (same lengths, Q 1, no window cut)
    max_len: int | None = None           # the longest seq_len, known on the host (None in a graph's static inputs)


@dataclass
class PrefillMeta:
    start: int                           # first row of this chunk in the flat batch
    end: int
    blocks: torch.Tensor                 # [blocks] of this sequence
    kv_len: int                          # keys after this chunk: cached prefix + chunk
    mask: torch.Tensor | None            # [n, kv_len]; None: plain causal (no prefix, no window)
    window_mask: torch.Tensor | None


@dataclass
class AttentionMetadata:
    """Everything a forward needs to know about where its tokens live. Built once per step by
    `ModelRunner.prepare`, shared by every layer."""
    positions: torch.Tensor              # [T] position of each token in its sequence
    slot_mapping: torch.Tensor           # [T] cache slot (block * block_size + offset) each token writes
    num_decodes: int                     # the first num_decodes rows are decode tokens (S * Q)
    decode: DecodeMeta | None
    prefills: list[PrefillMeta]
    window: int | None = None            # the sliding window of the layers that slide
    backend: str = "sdpa"                # decode attention: "triton" or "sdpa"

    @property
    def triton(self) -> bool:
        """A Triton rank (CUDA): the decode kernel, and the fused norm, rotary and SiLU kernels."""
        return self.backend == "triton"


def paged_attention(q: torch.Tensor, kv: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata,
                    sliding: bool = False) -> torch.Tensor:
    """q: [T, H, D]; kv: [T, 2*Hkv, D] (keys, then values); kv_cache: [blocks, block_size, 2*Hkv, D].
    Returns [T, H*D]."""
    num_heads, head_dim = q.shape[1], q.shape[2]
    kv_heads = kv.shape[1] // 2
    flat_cache = kv_cache.view(-1, 2 * kv_heads, head_dim)
    flat_cache.index_copy_(0, meta.slot_mapping, kv)
    window = meta.window if sliding else None
    parts = []
    if meta.decode is not None:
        n = meta.num_decodes
        decode = _triton_decode if meta.triton else _sdpa_decode
        parts.append(decode(q[:n], kv_cache, meta.decode, window).reshape(n, num_heads * head_dim))
    for p in meta.prefills:
        keys, values = _gather(kv_cache, p.blocks, 1, p.kv_len, kv_heads)
        mask = p.window_mask if sliding else p.mask
        out = _sdpa(q[p.start:p.end].transpose(0, 1).unsqueeze(0), keys, values, mask, causal=mask is None)  # [1, H, n, Dh]
        parts.append(out[0].transpose(0, 1).reshape(p.end - p.start, num_heads * head_dim))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _triton_decode(q: torch.Tensor, kv_cache: torch.Tensor, d: DecodeMeta, window: int | None) -> torch.Tensor:
    from .triton_decode import num_splits_for, paged_decode_attention   # triton: only where it runs
    splits = num_splits_for(d.block_tables.shape[0], kv_cache.shape[2] // 2, q.device)
    return paged_decode_attention(q, kv_cache, d.block_tables, d.seq_lens, d.q_len, q.shape[-1] ** -0.5,
                                  window=window, num_splits=splits)


def _sdpa_decode(q: torch.Tensor, kv_cache: torch.Tensor, d: DecodeMeta, window: int | None) -> torch.Tensor:
    """The reference path: every sequence's keys gathered up to the batch's longest, one masked
    SDPA call. The longest length comes from the host (prepare knew it) or, in a graph's static
    inputs, from seq_lens on CPU; on CUDA a graph's keys span its block tables' width."""
    seqs, q_len, (num_heads, head_dim) = d.block_tables.shape[0], d.q_len, q.shape[1:]
    kv_heads, block_size = kv_cache.shape[2] // 2, kv_cache.shape[1]
    if d.max_len is not None:
        kv_len, exact = d.max_len, True
    elif d.seq_lens.device.type == "cpu":      # a graph's static inputs on CPU: reading them is free
        kv_len, exact = int(d.seq_lens.max()), True
    else:
        kv_len, exact = d.block_tables.shape[1] * block_size, False
    width = -(-kv_len // block_size)
    keys, values = _gather(kv_cache, d.block_tables[:, :width].reshape(-1), seqs, kv_len, kv_heads)
    mask = None
    if d.masked or not exact:     # keys past the shortest length, or a window, or a verify chunk
        q_pos = d.seq_lens[:, None, None] - q_len + torch.arange(q_len, device=q.device)[None, :, None]
        k_pos = torch.arange(kv_len, device=q.device)
        mask = k_pos <= q_pos                                                            # [S, Q, K]
        if window:
            mask &= k_pos > q_pos - window
        mask = mask[:, None]                                                             # over heads
    out = _sdpa(q.view(seqs, q_len, num_heads, head_dim).transpose(1, 2), keys, values, mask, causal=False)  # [S, H, Q, Dh]
    return out.transpose(1, 2)


def _sdpa(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
          causal: bool) -> torch.Tensor:
    """SDPA over [B, H, n, D] queries and [B, Hkv, K, D] keys and values.
    On CUDA (cuDNN off, device.configure_device) the kernel that takes a mask, the memory-efficient
    one, does not take grouped heads: there a masked call gets the keys repeated per query head
    rather than falling back to the math kernel, which materialises every score."""
    gqa = keys.shape[1] != q.shape[1]
    if gqa and mask is not None and q.is_cuda:
        group = q.shape[1] // keys.shape[1]
        keys, values, gqa = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1), False
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=causal, enable_gqa=gqa)


def _gather(kv_cache, blocks, batch, kv_len, kv_heads):
    """Keys and values of `batch` sequences from their flattened block lists: [batch, Hkv, kv_len, D]
    each. index_select copies whole blocks; fancy indexing (cache[tables]) is several times slower
    on CPU."""
    g = kv_cache.index_select(0, blocks).view(batch, -1, 2 * kv_heads, kv_cache.shape[-1])[:, :kv_len]
    return g[:, :, :kv_heads].transpose(1, 2), g[:, :, kv_heads:].transpose(1, 2)
