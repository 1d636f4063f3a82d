"""Grouped-query attention over a paged KV cache.

The model runs on a flat batch: the scheduled tokens of every sequence side by side, [T, ...].
Each forward step first writes the new keys and values into their cache slots, then gathers every
sequence's keys from its block table and attends with one padded SDPA call, [B, Qmax] queries
against [B, Kmax] keys, masked by position. Pure decode steps (one query per sequence) skip the
padding entirely.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class AttentionMetadata:
    """Everything a forward needs to know about where its tokens live. Built once per step by
    `ModelRunner.prepare`, shared by every layer."""

    positions: torch.Tensor        # [T] position of each token in its sequence
    slot_mapping: torch.Tensor     # [T] cache slot (block * block_size + offset) each token writes
    block_tables: torch.Tensor     # [B, blocks] cache blocks of each sequence, padded with block 0
    mask: torch.Tensor             # [B, 1, Qmax, Kmax] which keys each (padded) query may see
    window_mask: torch.Tensor | None  # the same, limited to the sliding window (layers that use one)
    max_kv_len: int                # Kmax: keys gathered per sequence
    pad_index: torch.Tensor | None  # [T] row of each token in the [B*Qmax] padded layout; None when Qmax == 1
    num_seqs: int
    max_query_len: int


def paged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                    v_cache: torch.Tensor, meta: AttentionMetadata, sliding: bool = False) -> torch.Tensor:
    """q: [T, H, D]; k, v: [T, Hkv, D]; caches: [blocks, block_size, Hkv, D]. Returns [T, H*D]."""
    num_tokens, num_heads, head_dim = q.shape
    kv_heads = k.shape[1]
    k_cache.view(-1, kv_heads, head_dim).index_copy_(0, meta.slot_mapping, k)
    v_cache.view(-1, kv_heads, head_dim).index_copy_(0, meta.slot_mapping, v)

    batch, q_max, k_max = meta.num_seqs, meta.max_query_len, meta.max_kv_len
    keys = k_cache[meta.block_tables].flatten(1, 2)[:, :k_max]       # [B, Kmax, Hkv, D]
    values = v_cache[meta.block_tables].flatten(1, 2)[:, :k_max]
    if meta.pad_index is None:
        queries = q.view(batch, 1, num_heads, head_dim)
    else:
        queries = q.new_zeros(batch * q_max, num_heads, head_dim).index_copy_(0, meta.pad_index, q)
        queries = queries.view(batch, q_max, num_heads, head_dim)
    out = F.scaled_dot_product_attention(
        queries.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2),
        attn_mask=meta.window_mask if sliding else meta.mask,
        enable_gqa=kv_heads != num_heads)                               # [B, H, Qmax, D]
    out = out.transpose(1, 2).reshape(batch * q_max, num_heads * head_dim)
    if meta.pad_index is not None:
        out = out.index_select(0, meta.pad_index)
    return out
