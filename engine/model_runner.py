"""The model runner: turns a scheduled batch into tensors, runs the model, and returns the logits the
engine needs (the last position of every request that completes this step, and the prompt
positions of requests that asked for context logits).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention import AttentionMetadata
from .kv_cache import NULL_BLOCK, BlockManager
from .scheduler import ScheduledBatch


@dataclass
class SeqChunk:
    """One sequence's share of a forward: the tokens to compute, the position of the first one,
    and its block table. Everything `prepare` needs, whether the batch is real or synthesised."""
    token_ids: list[int]
    start: int
    block_table: list[int]


@dataclass
class StepInputs:
    input_ids: torch.Tensor
    meta: AttentionMetadata
    last_index: list[int]       # flat index of each sequence's last token this step


class ModelRunner:
    def __init__(self, model, kv_caches, blocks: BlockManager, device: torch.device, sliding_window: int | None):
        self.model, self.kv_caches, self.blocks = model, kv_caches, blocks
        self.device, self.sliding_window = device, sliding_window

    def chunks(self, batch: ScheduledBatch) -> list[SeqChunk]:
        out = []
        for req, n in zip(batch.requests, batch.num_tokens):
            start = req.num_computed_tokens
            out.append(SeqChunk(req.all_token_ids[start:start + n], start, self.blocks.tables[req.request_id]))
        return out

    def prepare(self, chunks: list[SeqChunk]) -> StepInputs:
        dev, bs = self.device, self.blocks.block_size
        q_lens_list = [len(c.token_ids) for c in chunks]
        batch, q_max = len(chunks), max(q_lens_list)
        n_blocks = max(len(c.block_table) for c in chunks)
        block_tables = torch.full((batch, n_blocks), NULL_BLOCK, dtype=torch.long)
        for i, c in enumerate(chunks):
            block_tables[i, :len(c.block_table)] = torch.tensor(c.block_table, dtype=torch.long)
        starts = torch.tensor([c.start for c in chunks], dtype=torch.long)
        q_lens = torch.tensor(q_lens_list, dtype=torch.long)

        q_idx = torch.arange(q_max)
        valid = q_idx[None, :] < q_lens[:, None]                            # [B, Qmax]
        q_pos = torch.where(valid, starts[:, None] + q_idx[None, :], 0)      # padded queries sit at 0
        max_kv_len = int((starts + q_lens).max())
        k_pos = torch.arange(max_kv_len)
        mask = k_pos[None, None, :] <= q_pos[:, :, None]                    # causal, and within length
        window_mask = None
        if self.sliding_window:
            window_mask = (mask & (k_pos[None, None, :] > q_pos[:, :, None] - self.sliding_window)).unsqueeze(1).to(dev)
        slots = block_tables.gather(1, q_pos // bs) * bs + q_pos % bs

        if q_max == 1:
            positions, slot_mapping, pad_index = q_pos.view(-1), slots.view(-1), None
        else:
            flat_valid = valid.view(-1)
            positions, slot_mapping = q_pos.view(-1)[flat_valid], slots.view(-1)[flat_valid]
            pad_index = flat_valid.nonzero().view(-1).to(dev)
        last_index = torch.cumsum(q_lens, 0).sub_(1).tolist()
        input_ids = torch.tensor([t for c in chunks for t in c.token_ids], dtype=torch.long)
        meta = AttentionMetadata(
            positions=positions.to(dev), slot_mapping=slot_mapping.to(dev), block_tables=block_tables.to(dev),
            mask=mask.unsqueeze(1).to(dev), window_mask=window_mask, max_kv_len=max_kv_len, pad_index=pad_index,
            num_seqs=batch, max_query_len=q_max)
        return StepInputs(input_ids.to(dev), meta, last_index)

    @torch.inference_mode()
    def forward(self, inputs: StepInputs) -> torch.Tensor:
        """Final hidden states of every token in the batch, [T, hidden]."""
        return self.model(inputs.input_ids, self.kv_caches, inputs.meta)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor, rows: list[int] | slice) -> torch.Tensor:
        return self.model.compute_logits(hidden[rows])
