"""The model runner: one rank's model, KV cache, decode graphs and MTP drafter, and the step's
execution on them.

`execute(scheduler_output)` turns the scheduled requests into chunks, runs the forward (pipeline
micro-batches, or a captured graph, or eager; under attention DP after the ranks agreed on graph
or eager), gathers the context logits asked for, and on the last stage verifies the drafts and
chooses each sampling request's new tokens. It reads request state and changes none of it (but
for a sampling request's random generator, which verification and drafting draw from): the
scheduler commits the result (Scheduler.update_from_output). `draft(jobs, output)` then runs the
MTP module for the next step. Warmup asks the runner for its shapes' memory and forwards.
"""
from __future__ import annotations

from collections import Counter

import torch

from .device import attention_backend, configure_device, default_kv_cache_bytes, to_device
from .engine_config import EngineConfig
from .graphs import DecodeGraphs
from .kv_cache import BlockManager, allocate_kv_cache, kv_bytes_per_block
from .loader import load_model
from .mtp import MtpDrafter
from .outputs import DraftJob, Drafts, ModelRunnerOutput, RequestResult, SchedulerOutput
from .parallel import Parallel
from .pipeline import pipelined_forward
from .prepare import Padding, SeqChunk, StepInputs, prepare, synthetic_chunks
from .speculative import unpack, verify_batch


class ModelRunner:
    def __init__(self, config: EngineConfig, parallel: Parallel):
        self.config, self.parallel, self.model_config = config, parallel, config.model_config
        self.device, self.mapping, self.rank = parallel.device, parallel.mapping, parallel.mapping.rank
        self.dp = parallel.attention_dp_group
        configure_device(self.device)
        self.attention_backend = attention_backend(self.device)
        loaded = load_model(config, parallel)
        self.model, self.mtp, self.loaded_tensors = loaded.model, loaded.mtp, loaded.tensors
        self.num_cache_layers = len(self.model.layers) + (1 if self.mtp is not None else 0)
        faults = config.faults
        self.prepare_fault = faults.get("drop_prepare_hook", self.rank)
        self.graph_size_alone = bool(faults.get("graph_size_alone", self.rank))
        self.blocks: BlockManager | None = None      # allocate_kv_cache()
        self.kv_caches: list[torch.Tensor] = []
        self.drafter: MtpDrafter | None = None
        self.graphs: DecodeGraphs | None = None      # captured during warmup, with decode_graphs
        self.forwards: Counter[str] = Counter()      # runtime forwards: "eager" or "graph-<padded size>"

    def num_kv_blocks(self) -> int:
        """The KV cache blocks this rank can hold: as configured, or what its memory budget allows
        (no more than max_num_seqs sequences of the model length could ever use)."""
        c = self.config
        if c.num_kv_blocks is not None:
            return c.num_kv_blocks
        kv_heads = self.model.layers[0].self_attn.num_kv_heads      # this rank's share
        per_block = kv_bytes_per_block(self.num_cache_layers, c.block_size, kv_heads, self.model_config.head_dim,
                                       self.model_config.dtype)
        budget = c.kv_cache_memory if c.kv_cache_memory is not None else default_kv_cache_bytes(self.device)
        useful = c.max_num_seqs * -(-self.model_config.max_position_embeddings // c.block_size)
        return min(budget // per_block, useful) + 1

    def allocate_kv_cache(self, blocks: BlockManager) -> None:
        """The cache tensors for `blocks`; then the drafter and the decode graphs, which use them.
        The MTP module's cache shares the block tables: its entry at position i sits where the
        target's does, in a tensor of its own."""
        cfg = self.model_config
        kv_heads = self.model.layers[0].self_attn.num_kv_heads
        kv = allocate_kv_cache(self.num_cache_layers, blocks.num_blocks, blocks.block_size, kv_heads, cfg.head_dim,
                               cfg.dtype, self.device)
        n_local = len(self.model.layers)
        self.blocks, self.kv_caches = blocks, kv[:n_local]
        if self.mtp is not None:
            self.drafter = MtpDrafter(self.mtp, kv[n_local], self.model, self, self.config.mtp_nextn)
        if self.config.decode_graphs:
            comms = [self.parallel.tp.comm] if self.parallel.tp.comm is not None else []
            self.graphs = DecodeGraphs(self, 1 + self.config.mtp_nextn, cfg.max_position_embeddings, comms, self.dp)
            # The drafter's passes too, where every rank drafts the same batch (not attention DP:
            # its ranks draft their own requests)
            if self.drafter is not None and self.dp is None:
                self.drafter.capture_graphs(cfg.max_position_embeddings, comms)

    # -- one step ---------------------------------------------------------------------------------

    def execute(self, sched: SchedulerOutput) -> ModelRunnerOutput:
        """The forward over the scheduled requests (none: an idle attention-DP rank's dummy
        forward), and on the last stage the logits, verification and new tokens."""
        hidden, last_index, input_ids = self._forward(self.chunks(sched))
        results = []
        for req, n, last in zip(sched.requests, sched.num_tokens, last_index):
            start, known = req.num_computed_tokens, n - len(req.draft_token_ids)
            r = RequestResult(req, start, last - n + 1, known, samples=start + known == req.num_tokens)
            if req.params.return_context_logits and hidden is not None:
                r.context_logits = self._context_logits(r, hidden)
            results.append(r)
        if self.mapping.is_last_stage:
            self._score_prompts([r for r in results if r.req.params.prompt_logprobs_from is not None], hidden)
            self._verify([r for r in results if r.samples], hidden, input_ids)
        return ModelRunnerOutput(results, hidden)

    def draft(self, jobs: list[DraftJob], out: ModelRunnerOutput) -> Drafts:
        """The MTP module's catch-up and drafts for the next step (last stage; empty elsewhere)."""
        return self.drafter.run(jobs, out.hidden) if self.drafter is not None else {}

    def chunks(self, sched: SchedulerOutput) -> list[SeqChunk]:
        """Each scheduled request's tokens for this step: its uncomputed known tokens, then the
        MTP drafts riding behind them to be verified (on the device only, when pp is 1)."""
        out = []
        for req, n in zip(sched.requests, sched.num_tokens):
            start = req.num_computed_tokens
            tokens = (req.all_token_ids + req.draft_token_ids)[start:start + n]
            tail = req.draft_device if req.draft_token_ids else None
            out.append(SeqChunk(tokens, start, self.blocks.tables[req.request_id], tail))
        return out

    def _forward(self, chunks: list[SeqChunk], path: str = "runtime") -> tuple[torch.Tensor | None, list[int],
                                                                                torch.Tensor | None]:
        """The batch through this rank's layers: (final hidden states on the last stage, None
        elsewhere; each chunk's last row in them; the input tokens, where this rank has them on
        the device: not under pipeline parallelism, whose drafts the host knows)."""
        if self.mapping.pp_size > 1:
            return *pipelined_forward(self, self.parallel, chunks, path), None
        size = self.graphs.size_for(chunks) if self.graphs is not None and path == "runtime" else 0
        if self.dp is not None:      # every rank's token count, and graph or eager for all
            agreed = self.dp.begin(sum(len(c.token_ids) for c in chunks) or 1, size)
            size = size if self.graph_size_alone else agreed     # the fault: decide alone
        if path == "runtime":
            self.forwards[f"graph-{size}" if size else "eager"] += 1
        if size:
            return self.graphs.replay(chunks, size)
        # No chunks: an attention-DP rank with nothing scheduled joins with one dummy token.
        inputs = self.prepare(chunks or synthetic_chunks(1, 1, self.blocks.block_size), path)
        return self.forward(inputs), inputs.last_index, inputs.input_ids

    def _verify(self, sampling: list[RequestResult], hidden: torch.Tensor, input_ids: torch.Tensor | None) -> None:
        """Each sampling request's new tokens and accepted drafts: the step's requests, greedy and
        sampling, verified together on the device (speculative.verify_batch), every result read
        back in one transfer, the step's one host synchronisation. The drafts are read from the
        step's input tokens on the device (the host may hold placeholders for them)."""
        if not sampling:
            return
        reqs = [r.req for r in sampling]
        rows = to_device([row for r in sampling for row in r.rows()], self.device)
        out = verify_batch(self.logits(hidden, rows), [req.draft_token_ids for req in reqs],
                           [torch.stack(req.draft_probs) if req.draft_token_ids and not req.params.greedy else None
                            for req in reqs],
                           [req.params for req in reqs], [req.generator for req in reqs],
                           None if input_ids is None else input_ids[rows])
        for r, (tokens, accepted) in zip(sampling, unpack(out.tolist())):
            r.new_token_ids, r.num_accepted = tokens, accepted

    def _score_prompts(self, scoring: list[RequestResult], hidden: torch.Tensor) -> None:
        """The prompt tokens this step scores for each request that asked (prompt_logprobs_from):
        the token at position j + 1 gets the log-softmax of row j's logits at it, and whether it
        is their argmax. One lm_head pass over every request's rows; the scores stay on the device
        until the output is built, so scoring adds no host read to the step."""
        rows, targets, counts = [], [], []
        for r in scoring:
            req = r.req
            lo = max(r.start, req.params.prompt_logprobs_from - 1 + req.num_prompt_scores)
            hi = min(r.start + r.num_known, len(req.prompt_token_ids) - 1)
            first = r.first_row - r.start                # flat row of position 0
            rows += range(first + lo, first + hi)
            targets += req.prompt_token_ids[lo + 1:hi + 1]
            counts.append(max(hi - lo, 0))
        if not rows:
            return
        index = to_device([rows, targets], self.device)
        logits = self.logits(hidden, index[0])
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, index[1, :, None])[:, 0]
        scores = torch.stack([logprobs, (logits.argmax(dim=-1) == index[1]).float()], dim=1)
        for r, part in zip(scoring, scores.split(counts)):
            if len(part):
                r.prompt_scores = part

    def _context_logits(self, r: RequestResult, hidden: torch.Tensor) -> torch.Tensor | None:
        """The logits of the prompt positions this step computed that were not collected yet (a
        recomputed prefix was)."""
        req = r.req
        lo = max(r.start, req.num_context_logits)
        hi = min(r.start + r.num_known, len(req.prompt_token_ids))
        if lo >= hi:
            return None
        first = r.first_row - r.start                # flat row of position 0
        return self.logits(hidden, slice(first + lo, first + hi)).cpu()

    # -- warmup and graph capture ------------------------------------------------------------------

    def warm(self, num_seqs: int, tokens_each: int) -> None:
        """One forward (and the logits) over a synthesised batch, through the capture path."""
        hidden, last_index, _ = self._forward(synthetic_chunks(num_seqs, tokens_each, self.blocks.block_size), "capture")
        if hidden is not None:
            self.logits(hidden, last_index)

    def graph_memory(self) -> dict[str, int]:
        """Bytes each captured graph added to its pool (CUDA; 0 on CPU): the decode step's by
        padded size ("4"), the drafter's by pass and size ("mtp-catch-up-4", "mtp-draft-4")."""
        if self.graphs is None:
            return {}
        out = {str(n): b for n, b in sorted(self.graphs.memory.items())}
        return out | (self.drafter.graph_memory if self.drafter is not None else {})

    def activation_bytes(self, num_seqs: int, tokens_each: int) -> int:
        """A generous estimate of one forward's activations: the token-wise tensors of a layer, the
        attention scores, and the logits."""
        cfg, layer = self.model_config, self.model.layers[0]
        tokens = num_seqs * tokens_each
        elem = torch.empty((), dtype=cfg.dtype).element_size()
        per_token = (8 * cfg.hidden_size + 3 * layer.mlp.inter + 2 * cfg.vocab_size) * elem
        scores = num_seqs * layer.self_attn.num_heads * tokens_each * tokens_each * 4
        return 2 * (tokens * per_token + scores)

    # -- the forward's parts ------------------------------------------------------------------------

    def prepare(self, chunks: list[SeqChunk], path: str = "runtime", pad: Padding | None = None) -> StepInputs:
        """The forward's tensors and metadata (engine/prepare.py); path "capture" is a batch
        synthesised for warmup or graph capture, which the drop_prepare_hook fault can hobble;
        `pad`: in a captured graph's static shapes."""
        fault = self.prepare_fault if path == "capture" else None
        return prepare(chunks, self.blocks.block_size, self.model_config.sliding_window, self.device, path,
                       frozenset([fault.arg]) if fault else frozenset(), pad, self.attention_backend)

    @torch.inference_mode()
    def forward(self, inputs: StepInputs, hidden: torch.Tensor | None = None, residual: torch.Tensor | None = None):
        """This rank's layers over the batch: the final hidden states [T, hidden] on the last
        pipeline stage, the (hidden, residual) pair to hand on elsewhere (see LlamaForCausalLM)."""
        return self.model(inputs.input_ids, self.kv_caches, inputs.meta, hidden, residual)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor, rows: list[int] | slice | torch.Tensor) -> torch.Tensor:
        return self.model.compute_logits(hidden[rows])
