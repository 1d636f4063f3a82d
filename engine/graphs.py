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

import torch

from .kv_cache import NULL_BLOCK
from .prepare import MetadataError, Padding, SeqChunk, StepInputs, synthetic_chunks


@dataclass
class Captured:
    inputs: StepInputs                  # the static buffers a replay fills
    hidden: torch.Tensor | None         # the graph's static output (CUDA; None on CPU, which runs a forward)
    graph: "torch.cuda.CUDAGraph | None"


class DecodeGraphs:
    """The captured decode graphs of one rank, by padded batch size."""

    def __init__(self, runner, q_len: int, max_model_len: int, comms: list, dp=None):
        self.runner, self.q_len, self.comms, self.dp = runner, q_len, comms, dp
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
        if self.dp is not None:
            self.dp.fix([num_seqs * self.q_len] * self.dp.size)
        if not self.on_cuda:
            self.runner.forward(inputs)    # what the capture runs on CUDA: the same collectives, once
            self.graphs[num_seqs] = Captured(inputs, None, None)
            self.memory[num_seqs] = 0
            return
        torch.cuda.synchronize()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):      # first use outside the graph: lazy inits, NCCL's included
            self.runner.forward(inputs)
        torch.cuda.current_stream().wait_stream(side)
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
            hidden = self.runner.forward(inputs)
        self.pool = graph.pool()
        self.graphs[num_seqs] = Captured(inputs, hidden, graph)
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

    def replay(self, chunks: list[SeqChunk], size: int) -> tuple[torch.Tensor, list[int]]:
        """The batch through the graph of `size` sequences: (hidden states of the padded batch,
        each chunk's last row), as `ModelRunner._forward` returns them."""
        captured = self.graphs[size]
        fresh = self.runner.prepare(chunks, "runtime", Padding(size, self.q_len, self.blocks))
        try:
            fresh.copy_into(captured.inputs)
        except MetadataError as e:
            raise MetadataError(f"graph of {size}: {e}") from None
        if self.dp is not None:
            self.dp.fix([size * self.q_len] * self.dp.size)
        if captured.graph is not None:
            captured.graph.replay()
            hidden = captured.hidden
        else:
            hidden = self.runner.forward(captured.inputs)
        return hidden, fresh.last_index
