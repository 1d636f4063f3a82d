"""Grouped-query attention over a paged KV cache.

The model runs on a flat batch: the scheduled tokens of every sequence side by side, [T, ...],
decode sequences (one new token each) first, then prefill chunks. Each layer writes the new keys
and values into their cache slots, then attends in two parts:
  decode   one batched SDPA call, [S, Q] queries (Q = 1, or 1 + the drafts being verified)
           against every sequence's cached keys, gathered from the block tables, masked by position;
  prefill  one SDPA call per chunk, its queries against its own cached prefix plus itself, causal.
Splitting them keeps a long prompt from padding every decode sequence to its length.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class DecodeMeta:
    block_tables: torch.Tensor           # [S, blocks], padded with the null block
    mask: torch.Tensor                   # [S, 1, Q, Kmax]: key at or before the query's position
    window_mask: torch.Tensor | None     # the same, limited to the sliding window
    max_kv_len: int
    q_len: int                           # Q: query tokens per sequence


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


def paged_attention(q: torch.Tensor, kv: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata,
                    sliding: bool = False) -> torch.Tensor:
    """q: [T, H, D]; kv: [T, 2*Hkv, D] (keys, then values); kv_cache: [blocks, block_size, 2*Hkv, D].
    Returns [T, H*D]."""
    num_heads, head_dim = q.shape[1], q.shape[2]
    kv_heads = kv.shape[1] // 2
    flat_cache = kv_cache.view(-1, 2 * kv_heads, head_dim)
    flat_cache.index_copy_(0, meta.slot_mapping, kv)
    gqa = kv_heads != num_heads
    parts = []
    if meta.decode is not None:
        d, n = meta.decode, meta.num_decodes
        seqs = n // d.q_len
        keys, values = _gather(kv_cache, d.block_tables.view(-1), seqs, d.max_kv_len, kv_heads)
        out = F.scaled_dot_product_attention(
            q[:n].view(seqs, d.q_len, num_heads, head_dim).transpose(1, 2), keys, values,
            attn_mask=d.window_mask if sliding else d.mask, enable_gqa=gqa)       # [S, H, Q, Dh]
        parts.append(out.transpose(1, 2).reshape(n, num_heads * head_dim))
    for p in meta.prefills:
        keys, values = _gather(kv_cache, p.blocks, 1, p.kv_len, kv_heads)
        mask = p.window_mask if sliding else p.mask
        out = F.scaled_dot_product_attention(
            q[p.start:p.end].transpose(0, 1).unsqueeze(0), keys, values,
            attn_mask=mask, is_causal=mask is None, enable_gqa=gqa)                # [1, H, n, Dh]
        parts.append(out[0].transpose(0, 1).reshape(p.end - p.start, num_heads * head_dim))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _gather(kv_cache, blocks, batch, kv_len, kv_heads):
    """Keys and values of `batch` sequences from their flattened block lists: [batch, Hkv, kv_len, D]
    each. index_select copies whole blocks; fancy indexing (cache[tables]) is several times slower
    on CPU."""
    g = kv_cache.index_select(0, blocks).view(batch, -1, 2 * kv_heads, kv_cache.shape[-1])[:, :kv_len]
    return g[:, :, :kv_heads].transpose(1, 2), g[:, :, kv_heads:].transpose(1, 2)
