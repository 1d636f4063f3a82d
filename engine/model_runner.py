"""The model runner: turns a scheduled batch into tensors, runs the model, and returns the logits the
engine needs (the last position of every request that completes this step, and the prompt
positions of requests that asked for context logits).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from .attention import AttentionMetadata, DecodeMeta, PrefillMeta
from .kv_cache import NULL_BLOCK, BlockManager
from .scheduler import ScheduledBatch

MAX_DECODE_LEN = 16     # longest chunk that may join the batched decode attention


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
    last_index: list[int]       # flat row of each chunk's last token, in the order chunks were given


class ModelRunner:
    def __init__(self, model, kv_caches, blocks: BlockManager, device: torch.device, sliding_window: int | None):
        self.model, self.kv_caches, self.blocks = model, kv_caches, blocks
        self.device, self.sliding_window = device, sliding_window

    def chunks(self, batch: ScheduledBatch) -> list[SeqChunk]:
        """Each scheduled request's tokens for this step: its uncomputed known tokens, then the
        MTP drafts riding behind them to be verified."""
        out = []
        for req, n in zip(batch.requests, batch.num_tokens):
            start = req.num_computed_tokens
            tokens = (req.all_token_ids + req.draft_token_ids)[start:start + n]
            out.append(SeqChunk(tokens, start, self.blocks.tables[req.request_id]))
        return out

    def prepare(self, chunks: list[SeqChunk]) -> StepInputs:
        """Lay the chunks out decode-first and build the attention metadata of the step. The most
        common short chunk length Q (1 when decoding, 1 + K when verifying K drafts) is the decode
        group: its chunks share one batched attention call. The others are prefill chunks, one
        call each, so that a long prompt does not pad the keys of every other sequence."""
        dev, bs, window = self.device, self.blocks.block_size, self.sliding_window
        short = Counter(len(c.token_ids) for c in chunks if len(c.token_ids) <= MAX_DECODE_LEN)
        decode_len = short.most_common(1)[0][0] if short else 1
        order = sorted(range(len(chunks)), key=lambda i: len(chunks[i].token_ids) != decode_len)   # stable
        num_seqs = sum(len(c.token_ids) == decode_len for c in chunks)
        num_decodes = num_seqs * decode_len
        input_ids, positions, slots, last_index = [], [], [], [0] * len(chunks)
        for i in order:
            c = chunks[i]
            pos = range(c.start, c.start + len(c.token_ids))
            input_ids += c.token_ids
            positions += pos
            slots += [c.block_table[p // bs] * bs + p % bs for p in pos]
            last_index[i] = len(input_ids) - 1

        decode = None
        if num_seqs:
            seqs = [chunks[i] for i in order[:num_seqs]]
            n_blocks = max(len(c.block_table) for c in seqs)
            tables = torch.tensor([c.block_table + [NULL_BLOCK] * (n_blocks - len(c.block_table)) for c in seqs],
                                  dtype=torch.long)
            starts = [c.start for c in seqs]
            max_kv_len = max(starts) + decode_len
            mask = window_mask = None
            # One query per sequence, all at the same position: every cached key is visible, no
            # mask needed (batch-1 decoding, the latency case, skips building one).
            if decode_len > 1 or min(starts) != max(starts) or (window and max_kv_len > window):
                q_pos = torch.tensor(starts)[:, None, None] + torch.arange(decode_len)[None, :, None]   # [S, Q, 1]
                k_pos = torch.arange(max_kv_len)
                mask = k_pos <= q_pos                                                                  # [S, Q, K]
                window_mask = (mask & (k_pos > q_pos - window)) if window else None
            decode = DecodeMeta(tables.to(dev), _as_sdpa_mask(mask, dev), _as_sdpa_mask(window_mask, dev),
                                max_kv_len, decode_len)

        prefills = []
        row = num_decodes
        for i in order[num_seqs:]:
            c = chunks[i]
            n, kv_len = len(c.token_ids), c.start + len(c.token_ids)
            k_pos = torch.arange(kv_len)[None, :]
            q_pos = torch.arange(c.start, kv_len)[:, None]
            causal = k_pos <= q_pos
            mask = causal if c.start else None                    # None: plain causal, SDPA's own
            window_mask = (causal & (k_pos > q_pos - window)).to(dev) if window else None
            blocks = torch.tensor(c.block_table[:-(-kv_len // bs)], dtype=torch.long)
            prefills.append(PrefillMeta(row, row + n, blocks.to(dev), kv_len,
                                        None if mask is None else mask.to(dev), window_mask))
            row += n

        ids, positions, slots = torch.tensor([input_ids, positions, slots], dtype=torch.long).to(dev).unbind()
        meta = AttentionMetadata(positions=positions, slot_mapping=slots, num_decodes=num_decodes,
                                 decode=decode, prefills=prefills)
        return StepInputs(ids, meta, last_index)

    @torch.inference_mode()
    def forward(self, inputs: StepInputs, hidden: torch.Tensor | None = None, residual: torch.Tensor | None = None):
        """This rank's layers over the batch: the final hidden states [T, hidden] on the last
        pipeline stage, the (hidden, residual) pair to hand on elsewhere (see LlamaForCausalLM)."""
        return self.model(inputs.input_ids, self.kv_caches, inputs.meta, hidden, residual)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor, rows: list[int] | slice) -> torch.Tensor:
        return self.model.compute_logits(hidden[rows])


def _as_sdpa_mask(mask: torch.Tensor | None, device) -> torch.Tensor | None:
    """[S, Q, Kmax] -> [S, 1, Q, Kmax]: broadcast over heads."""
    return None if mask is None else mask[:, None].to(device)
