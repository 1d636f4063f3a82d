"""DeepSeek-V3-style multi-token-prediction (MTP) modules: the draft model of speculative decoding.

Module k is stored after the base layers, as `model.layers.{num_hidden_layers + k - 1}.*`:

    x   = eh_proj(concat(enorm(embed(token at i+1)), hnorm(h_i)))     h_i: post-norm hidden at i
    h'_i = shared_head.norm(decoder_block(x))                           predicts the token at i+2
    logits = lm_head(h'_i)                                              embedding, lm_head shared

They are never part of the base model's layer list (invariant 1): the engine builds them apart,
gives them KV caches of their own, and runs them only to draft.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import AttentionMetadata
from .config import ModelConfig
from .device import to_device
from .layers import RMSNorm, ShardedLinear, whole
from .model import DecoderLayer, LlamaForCausalLM, layer_targets
from .outputs import DraftJob, Drafts
from .graphs import DecodeGraphs
from .kv_cache import NULL_BLOCK
from .prepare import DeviceTokens, SeqChunk, StepInputs
from .request import DRAFT_ON_DEVICE
from .parallel import TensorParallel
from .sampling import sample


class MtpModule(nn.Module):
    def __init__(self, cfg: ModelConfig, tp: TensorParallel | None = None):
        super().__init__()
        d = cfg.hidden_size
        self.enorm = RMSNorm(d, cfg.rms_norm_eps, cfg.dtype)
        self.hnorm = RMSNorm(d, cfg.rms_norm_eps, cfg.dtype)
        self.eh_proj = ShardedLinear(2 * d, [whole(None, d)], bias=False, dtype=cfg.dtype)   # replicated: small
        self.block = DecoderLayer(cfg, sliding=False, tp=tp or TensorParallel())
        self.head_norm = RMSNorm(d, cfg.rms_norm_eps, cfg.dtype)

    def forward(self, base: LlamaForCausalLM, hidden: torch.Tensor, next_ids: torch.Tensor, kv_cache: torch.Tensor,
                meta: AttentionMetadata) -> torch.Tensor:
        """hidden: [T, d] post-norm states at positions meta.positions; next_ids: [T] the token
        after each. Returns the post-norm output [T, d] (lm_head input, and the next draft's h)."""
        triton = meta.triton
        x = self.eh_proj(torch.cat([self.enorm(base.embed_tokens(next_ids), triton), self.hnorm(hidden, triton)], dim=-1))
        rope = base.rotary.tables(meta.positions, x.dtype)
        out, residual = self.block(x, None, kv_cache, meta, rope)
        return self.head_norm.add(out, residual, triton)[0]

    def weight_targets(self, prefix: str) -> dict[str, tuple]:
        targets = layer_targets(prefix, self.block)
        targets.update({prefix + "enorm.weight": (self.enorm, None, False),
                        prefix + "hnorm.weight": (self.hnorm, None, False),
                        prefix + "eh_proj.weight": (self.eh_proj, None, False),
                        prefix + "shared_head.norm.weight": (self.head_norm, None, False)})
        return targets


class MtpDrafter:
    """Runs the MTP module: a batched catch-up pass whose last position of each request gives
    draft 1, then one single-token pass per further draft, the module reused and fed its own
    post-norm output. (One module, as DeepSeek-V3 ships: a module k > 1 would need its own
    catch-up on drafted tokens, which this engine does not do; EngineConfig refuses such checkpoints.)

    With decode graphs (`capture_graphs`) both passes replay captured graphs in the decode steps.
    The catch-up of a decoding request covers its verified token and the n drafts accepted: 1 to
    1 + nextn positions, a different count per request. It is padded to 1 + nextn positions (junk
    tokens, its last hidden row repeated) so that one graph per batch size serves it: the padding
    writes the module's cache at positions no query reads before they are written again (the
    draft passes and the next catch-up start at the first of them), and beyond the request's
    blocks it writes the null block."""

    def __init__(self, module: MtpModule, kv_cache: torch.Tensor, base: LlamaForCausalLM, runner, nextn: int):
        self.module, self.kv_cache, self.base, self.runner, self.nextn = module, kv_cache, base, runner, nextn
        self.catch_up_graphs: DecodeGraphs | None = None
        self.draft_graphs: DecodeGraphs | None = None       # depths 2..nextn

    def capture_graphs(self, max_model_len: int, comms: list) -> None:
        """Graphs for the catch-up (1 + nextn positions a sequence) and draft (one) passes; warmup
        captures them per batch size with the target's (capture)."""
        width = self.base.embed_tokens.weight.shape[1]
        self.catch_up_graphs = DecodeGraphs(self.runner, 1 + self.nextn, max_model_len, comms,
                                            forward=self._module_forward, side_width=width)
        if self.nextn > 1:
            self.draft_graphs = DecodeGraphs(self.runner, 1, max_model_len, comms,
                                             forward=self._module_forward, side_width=width)

    def capture(self, num_seqs: int) -> None:
        for graphs in (self.catch_up_graphs, self.draft_graphs):
            if graphs is not None:
                graphs.capture(num_seqs)

    @property
    def graph_memory(self) -> dict[str, int]:
        return {f"mtp-{name}-{size}": b for name, graphs in (("catch-up", self.catch_up_graphs),
                                                             ("draft", self.draft_graphs))
                if graphs is not None for size, b in graphs.memory.items()}

    @torch.inference_mode()
    def run(self, jobs: list[DraftJob], hidden: torch.Tensor) -> Drafts:
        """Catch every job's MTP cache up, and propose each job's drafts."""
        jobs = [j for j in jobs if j.end > j.start]      # their drafts were consumed by the step
        if not jobs:
            return {}
        out, last = self._catch_up(jobs, hidden)
        drafting = [(j, row) for j, row in zip(jobs, last) if j.num_drafts > 0]
        # Each depth's drafts stay on the device (the next depth's input tokens). Without pipeline
        # parallelism they never come back: the next step's forward and verification read them on
        # the device, and the host learns the accepted ones from verification's one read.
        depths: list[tuple[list[int], torch.Tensor, list]] = []     # (indices in jobs_drafting, tokens, probs)
        tokens, index = None, list(range(len(drafting)))
        jobs_drafting = [j for j, _ in drafting]
        for depth in range(max((j.num_drafts for j in jobs_drafting), default=0)):
            keep = [i for i, (j, _) in enumerate(drafting) if j.num_drafts > depth]
            drafting, index = [drafting[i] for i in keep], [index[i] for i in keep]
            if depth > 0:     # draft d+1 at the position after draft d's: (own output there, draft d)
                previous = tokens.view(-1, 1)
                chunks = [SeqChunk([DRAFT_ON_DEVICE], j.end + depth - 1, self.runner.blocks.tables[j.req.request_id],
                                   DeviceTokens(previous, k, 1)) for k, (j, _) in zip(keep, drafting)]
                out, rows = self.forward(chunks, out, [[r] for _, r in drafting], self.draft_graphs)
                drafting = [(j, r) for (j, _), r in zip(drafting, rows)]
            logits = self.base.compute_logits(out.index_select(0, to_device([r for _, r in drafting], out.device)))
            reqs = [j.req for j, _ in drafting]
            tokens, probs = sample(logits, [r.params for r in reqs], [r.generator for r in reqs])
            depths.append((index, tokens, probs))
        if not depths:
            return {}
        probs_of: dict[int, list] = {}          # index in jobs_drafting -> each depth's distribution
        for at, _, probs in depths:
            for i, prob in zip(at, probs):
                probs_of.setdefault(i, []).append(prob)
        if self.runner.mapping.pp_size > 1:     # the other stages need the values: one read
            values, tokens_of = iter(torch.cat([t for _, t, _ in depths]).tolist()), {}
            for at, _, _ in depths:
                for i in at:
                    tokens_of.setdefault(i, []).append(next(values))
            return {j.req.request_id: (tokens_of[i], probs_of[i]) for i, j in enumerate(jobs_drafting)}
        # Else they stay on the device: a table [jobs, depths], job i's drafts the start of row i.
        table = torch.stack([t if len(at) == len(jobs_drafting) else
                             t.new_zeros(len(jobs_drafting)).index_copy_(0, to_device(at, t.device), t)
                             for at, t, _ in depths], dim=1)
        return {j.req.request_id: (DeviceTokens(table, i, j.num_drafts), probs_of[i])
                for i, j in enumerate(jobs_drafting)}

    def _catch_up(self, jobs: list[DraftJob], hidden: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """The catch-up pass: its output, and each job's last row in it. Padded to the catch-up
        graphs' 1 + nextn positions when a graph fits the padded batch (see the class docstring)."""
        q, tables = 1 + self.nextn, self.runner.blocks.tables
        graphs = self.catch_up_graphs
        if graphs is not None and all(j.end - j.start <= q for j in jobs):
            bs = self.runner.blocks.block_size
            chunks, rows = [], []
            for j in jobs:
                table = tables[j.req.request_id]
                n, need = j.end - j.start, -(-(j.start + q) // bs)
                chunks.append(SeqChunk(j.req.all_token_ids[j.start + 1:j.end + 1] + [0] * (q - n), j.start,
                                       table + [NULL_BLOCK] * (need - len(table))))
                rows.append(j.hidden_rows + [j.hidden_rows[-1]] * (q - n))
            if graphs.size_for(chunks):
                out, _ = self.forward(chunks, hidden, rows, graphs=graphs)
                return out, [i * q + j.end - j.start - 1 for i, j in enumerate(jobs)]
        chunks = [SeqChunk(j.req.all_token_ids[j.start + 1:j.end + 1], j.start, tables[j.req.request_id])
                  for j in jobs]
        return self.forward(chunks, hidden, [j.hidden_rows for j in jobs], graphs=graphs)

    def forward(self, chunks: list[SeqChunk], source: torch.Tensor, source_rows: list[list[int]],
                graphs: DecodeGraphs | None = None):
        """The module over the chunks, its hidden input the `source_rows` of `source`: a graph
        replay where one fits, else eager. Returns the output [T, d] and each chunk's last row in
        it. A draft depth's chunks carry the previous depth's drafts as device tails: never read
        back to the host."""
        size = graphs.size_for(chunks) if graphs is not None else 0
        if graphs is not None:       # the drafter's forwards are counted where it has graphs
            self.runner.forwards[f"mtp-graph-{size}" if size else "mtp-eager"] += 1
        if size:                     # a graph's rows: chunk after chunk, all of one length
            side = source.index_select(0, to_device([r for rows in source_rows for r in rows], source.device))
            return graphs.replay(chunks, size, side)[:2]
        inputs = self.runner.prepare(chunks)
        perm = [0] * len(inputs.input_ids)          # prepare may put chunks in another order
        for chunk, rows, last in zip(chunks, source_rows, inputs.last_index):
            perm[last - len(chunk.token_ids) + 1:last + 1] = rows
        side = source.index_select(0, to_device(perm, source.device))
        return self._module_forward(inputs, side), inputs.last_index

    def _module_forward(self, inputs: StepInputs, side: torch.Tensor) -> torch.Tensor:
        return self.module(self.base, side, inputs.input_ids, self.kv_cache, inputs.meta)
