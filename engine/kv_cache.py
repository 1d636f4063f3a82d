"""The paged KV cache: per-layer key/value tensors cut into fixed-size blocks, and the block manager
that hands blocks to requests.

Block 0 is never handed out: padded block-table entries and dummy tokens (warmup, padded batches)
point at it, so their writes can never land in a live request's cache.
"""
from __future__ import annotations

import torch

NULL_BLOCK = 0


def allocate_kv_cache(num_layers: int, num_blocks: int, block_size: int, kv_heads: int, head_dim: int,
                      dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """One tensor per layer, [blocks, block_size, 2 * kv_heads, head_dim]: keys in the first
    kv_heads heads, values in the rest, so a step writes and gathers each layer's cache once."""
    shape = (num_blocks, block_size, 2 * kv_heads, head_dim)
    # Zeroed, not empty: a masked-out slot must never hold NaN bits that a matmul could spread.
    return [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]


def kv_bytes_per_block(num_layers: int, block_size: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    return 2 * num_layers * block_size * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


class BlockManager:
    """Hands out blocks to requests. A block can be in several requests' tables (a shared prompt
    prefix, `fork`): it is counted once per table and goes back to the free list with the last."""

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 2:
            raise ValueError(f"the KV cache needs at least 2 blocks (one is reserved), got {num_blocks}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self._free = list(range(num_blocks - 1, NULL_BLOCK, -1))   # a stack: pop() gives low ids first
        self._refs = [0] * num_blocks                             # tables holding each block
        self.tables: dict[int, list[int]] = {}

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def capacity_tokens(self) -> int:
        return (self.num_blocks - 1) * self.block_size

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def allocate(self, request_id: int, num_tokens: int) -> bool:
        """Grow the request's table to hold `num_tokens` tokens. All or nothing: False (and no
        change) when there are not enough free blocks."""
        table = self.tables.setdefault(request_id, [])
        need = self.blocks_for(num_tokens) - len(table)
        if need > len(self._free):
            if not table:
                del self.tables[request_id]
            return False
        for _ in range(max(need, 0)):
            block = self._free.pop()
            self._refs[block] = 1
            table.append(block)
        return True

    def fork(self, source_id: int, request_id: int, num_blocks: int) -> None:
        """Start the request's table with the source's first `num_blocks` blocks, shared: their
        keys and values are the request's own prefix, computed once."""
        shared = self.tables[source_id][:num_blocks]
        if len(shared) != num_blocks or request_id in self.tables:
            raise ValueError(f"cannot fork {num_blocks} blocks of request {source_id} into request {request_id}")
        for block in shared:
            self._refs[block] += 1
        self.tables[request_id] = list(shared)

    def truncate(self, request_id: int, num_blocks: int) -> None:
        """Keep only the request's first `num_blocks` blocks."""
        table = self.tables[request_id]
        self._release(table[num_blocks:])
        del table[num_blocks:]

    def free(self, request_id: int) -> None:
        self._release(self.tables.pop(request_id, []))

    def _release(self, blocks: list[int]) -> None:
        for block in reversed(blocks):
            self._refs[block] -= 1
            if not self._refs[block]:
                self._free.append(block)
