"""The model runner: turns a scheduled batch into tensors, runs the model, and returns the logits the
engine needs (the last position of every request that completes this step, and the prompt
positions of requests that asked for context logits).
"""
from __future__ import annotations

import torch

from . import faults
from .kv_cache import BlockManager
from .prepare import Padding, SeqChunk, StepInputs, prepare
from .scheduler import ScheduledBatch


class ModelRunner:
    def __init__(self, model, kv_caches, blocks: BlockManager, device: torch.device, sliding_window: int | None,
                 rank: int = 0):
        self.model, self.kv_caches, self.blocks = model, kv_caches, blocks
        self.device, self.sliding_window, self.rank = device, sliding_window, rank

    def chunks(self, batch: ScheduledBatch) -> list[SeqChunk]:
        """Each scheduled request's tokens for this step: its uncomputed known tokens, then the
        MTP drafts riding behind them to be verified."""
        out = []
        for req, n in zip(batch.requests, batch.num_tokens):
            start = req.num_computed_tokens
            tokens = (req.all_token_ids + req.draft_token_ids)[start:start + n]
            out.append(SeqChunk(tokens, start, self.blocks.tables[req.request_id]))
        return out

    def prepare(self, chunks: list[SeqChunk], path: str = "runtime", pad: Padding | None = None) -> StepInputs:
        """The forward's tensors and metadata (engine/prepare.py); path "capture" is a batch
        synthesised for warmup or graph capture, which the drop_prepare_hook fault can hobble;
        `pad`: in a captured graph's static shapes."""
        fault = faults.get("drop_prepare_hook", self.rank) if path == "capture" else None
        return prepare(chunks, self.blocks.block_size, self.sliding_window, self.device, path,
                       frozenset([fault.arg]) if fault else frozenset(), pad)

    @torch.inference_mode()
    def forward(self, inputs: StepInputs, hidden: torch.Tensor | None = None, residual: torch.Tensor | None = None):
        """This rank's layers over the batch: the final hidden states [T, hidden] on the last
        pipeline stage, the (hidden, residual) pair to hand on elsewhere (see LlamaForCausalLM)."""
        return self.model(inputs.input_ids, self.kv_caches, inputs.meta, hidden, residual)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor, rows: list[int] | slice) -> torch.Tensor:
        return self.model.compute_logits(hidden[rows])

