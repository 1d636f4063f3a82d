"""Decode steps as graphs: captured once per batch size, replayed with padding.

For a given batch size a decode step launches the same kernels every time; only the numbers in
its inputs change. So each decode size that warmup agreed on is captured (largest first, the
smaller graphs reusing the larger ones' memory pool) over static input buffers, and a step with
n sequences is padded to the smallest captured size >= n with sequences of the null block
(prepare's `pad`), its inputs copied into the static buffers, and the graph replayed.

Nothing in a graph depends on the model's length: the static block tables are as wide as the
longest sequence could need (ints, filled up with the null block), and the Triton decode attention
reads each sequence's keys only up to its length (seq_lens, a tensor), so one capture per batch
size serves every length and costs what the real lengths cost (attention.py, triton_decode.py).
The SDPA fallback on CUDA (no Triton) pads a graph's keys to the tables' width instead.

On CUDA the capture is a CUDA graph, and `memory` records what each capture added to the graph
pool. CPU has no graph API: there the same static buffers run through an eager forward on each
replay (padded rows included), which runs the padding, the static metadata and the attention-DP
agreement below on any machine, which is what the tests check.

Invariant 3: the static buffers are prepared by the same hooks as every runtime batch (the
capture batch goes through prepare's capture path), and a replay copies every tensor field of a
freshly prepared batch into them, so none can be left stale.

Invariant 2 under attention DP: a graph's collectives have fixed sizes, so the ranks agree on
graph or eager and on the padded size (AttentionDataParallel.begin) before any of them replays.
Only pipeline-free layouts capture (pp 1): stages exchange micro-batches between forwards.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable

import torch

from .kv_cache import NULL_BLOCK
from .prepare import MetadataError, Padding, SeqChunk, StepInputs, synthetic_chunks


@dataclass
class Captured:
    inputs: StepInputs                  # the static buffers a replay fills
    side: torch.Tensor | None           # the static per-row side input (the MTP module's hidden states)
    hidden: torch.Tensor | None         # the graph's static output (CUDA; None on CPU, which runs a forward)
    graph: "torch.cuda.CUDAGraph | None"


# What a graph runs: the forward over the static inputs (and the side input, when it has one).
Forward = Callable[[StepInputs, "torch.Tensor | None"], torch.Tensor]


class DecodeGraphs:
    """The captured decode graphs of one rank, by padded batch size: of the target model's decode
    step by default, or of any `forward` over decode-shaped inputs with a side input of
    `side_width` per row (the MTP drafter's passes, engine/mtp.py)."""

    def __init__(self, runner, q_len: int, max_model_len: int, comms: list, dp=None,
                 forward: Forward | None = None, side_width: int | None = None):
        self.runner, self.q_len, self.comms, self.dp = runner, q_len, comms, dp
        self.forward: Forward = forward or (lambda inputs, _side: runner.forward(inputs))
        self.side_width = side_width
        self.blocks = runner.blocks.blocks_for(max_model_len)          # table width of the longest sequence
        self.graphs: dict[int, Captured] = {}
        self.memory: dict[int, int] = {}                               # bytes each capture added (CUDA)
        self.pool = None

    @property
    def on_cuda(self) -> bool:
        return self.runner.device.type == "cuda"

    def capture(self, num_seqs: int) -> None:
        """Capture the decode graph of `num_seqs` sequences. Called by warmup on every rank for
        the same sizes, largest first."""
        pad = Padding(num_seqs, self.q_len, self.blocks)
        chunks = synthetic_chunks(num_seqs, self.q_len, self.runner.blocks.block_size)
        inputs = self.runner.prepare(chunks, "capture", pad)
        # The static tables are as wide as the longest sequence needs; a replay fills their left
        # part and nulls the rest (StepInputs.copy_into).
        d = inputs.meta.decode
        wide = d.block_tables.new_full((num_seqs, self.blocks), NULL_BLOCK)
        wide[:, :d.block_tables.shape[1]] = d.block_tables
        d.block_tables = wide
        side = None
        if self.side_width is not None:
            side = torch.zeros(num_seqs * self.q_len, self.side_width, dtype=self.runner.model_config.dtype,
                               device=self.runner.device)
        if self.dp is not None:
            self.dp.fix([num_seqs * self.q_len] * self.dp.size)
        if not self.on_cuda:
            self.forward(inputs, side)     # what the capture runs on CUDA: the same collectives, once
            self.graphs[num_seqs] = Captured(inputs, side, None, None)
            self.memory[num_seqs] = 0
            return
        torch.cuda.synchronize()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):    # first use outside the graph: lazy inits, NCCL's included
            self.forward(inputs, side)
        torch.cuda.current_stream().wait_stream(stream)
        # The capture empties the allocator's cache first (torch.cuda.graph does): so does the
        # measurement, so that only the pool's growth counts.
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_reserved(self.runner.device)
        graph = torch.cuda.CUDAGraph()
        with ExitStack() as stack:
            for comm in self.comms:       # the fingerprint check reads back to the host: not capturable
                stack.enter_context(comm.unchecked())
            stack.enter_context(torch.cuda.graph(graph, pool=self.pool))
            hidden = self.forward(inputs, side)
        self.pool = graph.pool()
        self.graphs[num_seqs] = Captured(inputs, side, hidden, graph)
        torch.cuda.synchronize()
        self.memory[num_seqs] = torch.cuda.memory_reserved(self.runner.device) - before

    def size_for(self, chunks: list[SeqChunk]) -> int:
        """The padded size this batch would replay at, or 0 when it needs an eager forward (a
        prefill chunk, a verify chunk of another length, more sequences than the largest graph).
        No chunks (an idle attention-DP rank): the smallest graph, all padding."""
        if any(len(c.token_ids) != self.q_len or len(c.block_table) > self.blocks for c in chunks):
            return 0
        fits = [size for size in self.graphs if size >= len(chunks)]
        return min(fits) if fits else 0

    def replay(self, chunks: list[SeqChunk], size: int,
               side: torch.Tensor | None = None) -> tuple[torch.Tensor, list[int], torch.Tensor]:
        """The batch through the graph of `size` sequences: (hidden states of the padded batch,
        each chunk's last row, the input tokens), as `ModelRunner._forward` returns them. `side`:
        the side input's rows of the given chunks (the padding's rows are zeroed)."""
        captured = self.graphs[size]
        fresh = self.runner.prepare(chunks, "runtime", Padding(size, self.q_len, self.blocks))
        try:
            fresh.copy_into(captured.inputs)
        except MetadataError as e:
            raise MetadataError(f"graph of {size}: {e}") from None
        if captured.side is not None:
            captured.side[:len(side)].copy_(side)
            captured.side[len(side):].zero_()
        if self.dp is not None:
            self.dp.fix([size * self.q_len] * self.dp.size)
        if captured.graph is not None:
            captured.graph.replay()
            hidden = captured.hidden
        else:
            hidden = self.forward(captured.inputs, captured.side)
        return hidden, fresh.last_index, captured.inputs.input_ids
