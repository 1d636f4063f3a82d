"""The engine core: one step = schedule, prepare, forward, sample (or verify drafts), update
request state, and with MTP, draft the next step's tokens.

It owns the model, the KV cache, the scheduler, the model runner and the MTP drafter for one
rank. `LLM` drives it until every request has finished.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import torch

from . import faults
from .checkpoint import load_weights
from .config import ModelConfig
from .device import default_kv_cache_bytes
from .errors import ConfigError
from .graphs import DecodeGraphs
from .kv_cache import BlockManager, allocate_kv_cache, kv_bytes_per_block
from .model import LlamaForCausalLM
from .model_runner import ModelRunner
from .prepare import SeqChunk, synthetic_chunks
from .mtp import DraftJob, MtpDrafter, MtpModule
from .parallel import Parallel, split_evenly
from .request import Request, Status
from .scheduler import ScheduledBatch, Scheduler
from .speculative import accept_greedy, verify
from .tokenizer import Tokenizer


class EngineCore:
    def __init__(self, model_dir: Path, cfg: ModelConfig, parallel: Parallel, tokenizer: Tokenizer | None, *,
                 max_num_seqs: int, max_num_tokens: int, block_size: int,
                 num_kv_blocks: int | None, kv_cache_memory: int | None, mtp_nextn: int = 0,
                 gather_iteration_stats: bool = False):
        self.cfg, self.parallel, self.tokenizer, self.mtp_nextn = cfg, parallel, tokenizer, mtp_nextn
        self.device, self.mapping = parallel.device, parallel.mapping
        self.max_model_len = cfg.max_position_embeddings
        L = cfg.num_hidden_layers
        if mtp_nextn and cfg.num_nextn_predict_layers != 1:
            raise ConfigError(f"mtp_nextn={mtp_nextn} needs a checkpoint with one MTP module "
                             f"(num_nextn_predict_layers=1 in config.json); this one has {cfg.num_nextn_predict_layers}")
        # Invariant 1: the MTP module is never in the base model's layer list; only the last
        # stage, which drafts, builds it and loads its weights.
        drafting = bool(mtp_nextn) and self.mapping.is_last_stage
        if drafting and faults.get("drop_mtp_on_last_stage", self.mapping.rank):
            drafting = False
        self.adp = parallel.adp
        with torch.device(self.device):
            self.model = LlamaForCausalLM(cfg, self.mapping, parallel.tp, keep_embedding=drafting, adp=self.adp).eval()
            # Under attention DP each rank drafts for its own requests alone: the (small) MTP
            # module is held whole, so drafting needs no collective and no lockstep.
            mtp = MtpModule(cfg, None if self.adp else parallel.tp).eval() if drafting else None
        targets = self.model.weight_targets()
        if mtp is not None:
            targets.update(mtp.weight_targets(f"model.layers.{L}."))
        load_weights(targets, model_dir, optional={"lm_head.weight"} if cfg.tie_word_embeddings else set(),
                     skip=_held_elsewhere(targets, L + cfg.num_nextn_predict_layers))
        if mtp_nextn and self.mapping.is_last_stage and mtp is None:
            raise RuntimeError(f"rank {self.mapping.rank}: mtp_nextn={mtp_nextn} but the last pipeline stage holds "
                               f"no MTP module weights (model.layers.{L}.*), so it could never draft")
        self.loaded_tensors = sorted(targets)
        num_cache_layers = len(self.model.layers) + (1 if mtp is not None else 0)

        kv_heads = self.model.layers[0].self_attn.num_kv_heads      # this rank's share
        if num_kv_blocks is None:
            per_block = kv_bytes_per_block(num_cache_layers, block_size, kv_heads, cfg.head_dim, cfg.dtype)
            budget = kv_cache_memory if kv_cache_memory is not None else default_kv_cache_bytes(self.device)
            useful = max_num_seqs * -(-self.max_model_len // block_size)   # more could never be used
            num_kv_blocks = min(budget // per_block, useful) + 1
        if self.adp is None:
            # Every rank runs the same scheduler over the same block tables: the smallest cache wins.
            num_kv_blocks = parallel.agree_min(num_kv_blocks)
        self.blocks = BlockManager(num_kv_blocks, block_size)
        kv = allocate_kv_cache(num_cache_layers, num_kv_blocks, block_size, kv_heads, cfg.head_dim, cfg.dtype,
                               self.device)
        n_local = len(self.model.layers)
        self.runner = ModelRunner(self.model, kv[:n_local], self.blocks, self.device, cfg.sliding_window,
                                  self.mapping.rank)
        # The MTP module's cache shares the block tables: its entry at position i sits where the
        # target's does, in a tensor of its own.
        self.drafter = MtpDrafter(mtp, kv[n_local], self.model, self.runner) if mtp is not None else None
        self.scheduler = Scheduler(self.blocks, max_num_seqs, max_num_tokens, self.max_model_len)
        self.num_steps = 0
        # Attention DP: every rank sees every request and routes it the same way; the ones
        # another rank owns wait here until that rank's result arrives (see _flush).
        self.remote: dict[int, Request] = {}
        self.load = [[0, 0] for _ in range(parallel.tp.size)]       # [tokens, requests] routed to each rank
        self.num_served = 0                                          # requests this rank ran
        self.gather_stats = gather_iteration_stats or bool(faults.get("all_rank_stats", self.mapping.rank))
        # Faults that act every iteration, read once here rather than on the step's path.
        idle = faults.get("idle_rank", self.mapping.rank)
        self.idle_iterations = int(idle.arg or 0) if idle else 0
        self.plant_gather = bool(faults.get("gather_when_finished", self.mapping.rank))
        self.graph_size_alone = bool(faults.get("graph_size_alone", self.mapping.rank))
        self.iteration_stats: list[dict] = []
        self.graphs: DecodeGraphs | None = None      # enable_graphs(); warmup captures them
        self.forwards: Counter[str] = Counter()      # runtime forwards: "eager" or "graph-<padded size>"

    def enable_graphs(self) -> None:
        """Decode steps replay captured graphs (engine/graphs.py) from now on, once warmup has
        captured them. Pipeline stages exchange micro-batches between forwards: pp 1 only."""
        if self.mapping.pp_size > 1:
            raise ConfigError("decode graphs need pp 1 (pipeline stages run eagerly)")
        comms = [self.parallel.tp.comm] if self.parallel.tp.comm is not None else []
        self.graphs = DecodeGraphs(self.runner, 1 + self.mtp_nextn, self.max_model_len, comms, self.adp)

    def add_request(self, req: Request) -> None:
        if not req.prompt_token_ids:
            raise ValueError(f"request {req.request_id}: empty prompt")
        bad = [t for t in req.prompt_token_ids if not 0 <= t < self.cfg.vocab_size]
        if bad:
            raise ValueError(f"request {req.request_id}: token id {bad[0]} outside the vocabulary "
                             f"(size {self.cfg.vocab_size})")
        if len(req.prompt_token_ids) >= self.max_model_len:
            raise ValueError(f"request {req.request_id}: prompt of {len(req.prompt_token_ids)} tokens leaves no "
                             f"room to generate (max_position_embeddings {self.max_model_len})")
        if req.params.stop and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer.json in the checkpoint directory")
        if self.adp is not None and self._route(req) != self.mapping.tp_rank:
            self.remote[req.request_id] = req
            return
        if req.params.seed is not None:
            req.generator = torch.Generator(device=self.device).manual_seed(req.params.seed)
        self.scheduler.add(req)
        self.num_served += 1

    def has_unfinished(self) -> bool:
        """Under attention DP the same answer on every rank: each learns every finished request
        at the same iteration."""
        return self.scheduler.has_unfinished() or bool(self.remote)

    def _route(self, req: Request) -> int:
        """Attention DP: the rank with the fewest routed tokens (then requests) takes it, the same
        choice on every rank since every rank routes every request in the same order."""
        rank = min(range(len(self.load)), key=lambda r: (self.load[r][0], self.load[r][1], r))
        self._count_load(rank, req, +1)
        return rank

    def _count_load(self, rank: int, req: Request, sign: int) -> None:
        self.load[rank][0] += sign * (len(req.prompt_token_ids) + req.params.max_tokens)
        self.load[rank][1] += sign

    def step(self) -> list[Request]:
        """Run one forward over the scheduled batch; returns the requests that finished.

        Every rank takes the same decisions in the same order: the last pipeline stage samples
        (verifies drafts) and drafts; under pipeline parallelism one broadcast then carries its
        decisions to the other stages, which apply them to their own copy of the request state.
        The tensor-parallel ranks of the last stage decide alike on their own: their logits come
        from the same all-reduced hidden states, bit for bit. Under attention DP each rank runs
        its own requests (a dummy forward when it has none), then all exchange what finished."""
        self.num_steps += 1
        if self.adp is not None:
            return self._flush(self._adp_step())
        batch = self.scheduler.schedule()
        if not batch:
            raise RuntimeError("scheduler produced an empty batch with requests pending (KV cache too small?)")
        return self._run(batch)

    def _adp_step(self) -> list[Request]:
        """Attention DP: run this rank's own batch, or a one-token dummy forward when it has
        nothing (or a fault keeps it idle): the forward's collectives need every rank."""
        idle = self.num_steps <= self.idle_iterations
        batch = ScheduledBatch() if idle else self.scheduler.schedule()
        self._record_stats(batch)
        if batch:
            return self._run(batch)
        if self.scheduler.has_unfinished() and not idle:
            raise RuntimeError("scheduler produced an empty batch with requests pending (KV cache too small?)")
        self._forward([])          # a dummy forward: writes only to the null block
        return []

    def _run(self, batch: ScheduledBatch) -> list[Request]:
        hidden, last_index = self._forward(self.runner.chunks(batch))

        # Rows whose logits pick tokens: the last known token of each request whose known tokens
        # are all in the cache after this step, then one row per draft riding behind it.
        sampling, jobs = [], []
        for req, n, last in zip(batch.requests, batch.num_tokens, last_index):
            first_row, start = last - n + 1, req.num_computed_tokens
            known = n - len(req.draft_token_ids)
            if req.params.return_context_logits and hidden is not None:
                self._collect_context_logits(req, known, first_row + known - 1, hidden)
            req.num_computed_tokens += known
            if req.num_computed_tokens == req.num_tokens:
                sampling.append((req, list(range(first_row + known - 1, last + 1)), first_row, start))
            else:
                jobs.append((req, first_row, start))           # a prefill chunk: the MTP still catches up
        if self.mapping.is_last_stage:
            decisions = self._verify(sampling, hidden)
            finished, draft_jobs = self._apply(sampling, decisions, jobs)
            if self.drafter is not None:
                self.drafter.run(draft_jobs, hidden)
            if self.mapping.pp_size > 1:
                self._share(batch, sampling, decisions, draft_jobs)
        else:
            decisions, drafts = self._share(batch, sampling, None, None)
            finished, draft_jobs = self._apply(sampling, decisions, jobs)
            for job in draft_jobs:
                job.req.draft_token_ids[:] = drafts[job.req.request_id]
                job.req.draft_probs[:] = [None] * len(job.req.draft_token_ids)   # only the last stage verifies
        return finished

    def warm_forward(self, chunks: list[SeqChunk]) -> None:
        """One forward (and the logits) over a synthesised batch, through the capture path."""
        hidden, last_index = self._forward(chunks, path="capture")
        if hidden is not None:
            self.runner.logits(hidden, last_index)

    def _forward(self, chunks: list[SeqChunk], path: str = "runtime") -> tuple[torch.Tensor | None, list[int]]:
        """The batch through this rank's layers. Returns the final hidden states (on the last stage;
        None elsewhere) and each chunk's last row in them.

        Under pipeline parallelism the batch is cut into up to pp_size micro-batches: a stage
        sends micro-batch m on (without waiting) and starts m+1 while the next stage works on m,
        so the stages compute at the same time instead of in turn."""
        if self.mapping.pp_size == 1:
            size = self.graphs.size_for(chunks) if self.graphs is not None and path == "runtime" else 0
            if self.adp is not None:      # every rank's token count, and graph or eager for all
                agreed = self.adp.begin(sum(len(c.token_ids) for c in chunks) or 1, size)
                size = size if self.graph_size_alone else agreed     # the fault: decide alone
            if path == "runtime":
                self.forwards[f"graph-{size}" if size else "eager"] += 1
            if size:
                return self.graphs.replay(chunks, size)
            # No chunks: an attention-DP rank with nothing scheduled joins with one dummy token.
            inputs = self.runner.prepare(chunks or synthetic_chunks(1, 1, self.blocks.block_size), path)
            return self.runner.forward(inputs), inputs.last_index
        p, m = self.parallel, self.mapping
        outs, sends, last_index, offset = [], [], [], 0
        parts = min(m.pp_size, len(chunks))
        for group in (split_evenly(len(chunks), parts, i) for i in range(parts)):
            inputs = self.runner.prepare([chunks[i] for i in group], path)
            tokens = len(inputs.input_ids)
            hidden = residual = None
            if not m.is_first_stage:    # hidden state and residual, stacked: [2, T, d]
                hidden, residual = p.recv_prev((2, tokens, self.cfg.hidden_size), self.cfg.dtype).unbind()
            out = self.runner.forward(inputs, hidden, residual)
            if m.is_last_stage:
                outs.append(out)
            else:
                pair = torch.stack(out)
                sends.append((p.send_next(pair), pair))
            last_index += [offset + row for row in inputs.last_index]
            offset += tokens
        for work, _tensor in sends:
            work.wait()
        return (torch.cat(outs) if m.is_last_stage else None), last_index

    def _verify(self, sampling, hidden) -> list[tuple[list[int], int]]:
        """(new tokens, accepted drafts) of every request that samples this step."""
        if not sampling:
            return []
        logits = self.runner.logits(hidden, [row for _, rows, _, _ in sampling for row in rows])
        argmax = logits.argmax(dim=-1).tolist()          # one call for every greedy row of the step
        decisions, offset = [], 0
        for req, rows, _, _ in sampling:
            drafts, probs, end = req.draft_token_ids, req.draft_probs, offset + len(rows)
            if req.params.greedy:
                decisions.append(accept_greedy(argmax[offset:end], drafts))
            else:
                decisions.append(verify(logits[offset:end], drafts, torch.stack(probs) if drafts else None,
                                        req.params, req.generator))
            offset = end
        return decisions

    def _apply(self, sampling, decisions, jobs) -> tuple[list[Request], list[DraftJob]]:
        """Commit the step's decisions to the request state (identically on every rank): roll the
        cache back past rejected drafts, append the tokens, finish requests; then the MTP work of
        the requests still running (which also reserves blocks for the drafts)."""
        finished, jobs = [], list(jobs)
        for (req, _, first_row, start), (new, accepted) in zip(sampling, decisions):
            req.spec.record(len(req.draft_token_ids), accepted)
            req.num_computed_tokens += accepted            # rejected drafts' cache entries roll back
            req.keep_drafts(0)
            if self._append(req, new):
                finished.append(req)
            else:
                jobs.append((req, first_row, start))
        draft_jobs = [self._draft_job(*job) for job in jobs] if self.mtp_nextn else []
        for job in draft_jobs:         # the MTP cache holds these positions once the drafter ran
            job.req.num_mtp_computed = job.end
        return finished, draft_jobs

    def _share(self, batch, sampling, decisions, draft_jobs):
        """One broadcast from the last stage: per scheduled request, its new tokens (if it sampled)
        and its drafts. A fixed-width int64 row each, [n_new, new..., n_drafts, drafts...], so
        the receivers know the shape without a second message. Returns (decisions, drafts by
        request id) on the receiving stages."""
        k = self.mtp_nextn
        width = 2 * k + 3
        table = torch.full((len(batch), width), -1, dtype=torch.long)
        row_of = {req.request_id: i for i, req in enumerate(batch.requests)}
        if decisions is not None:
            for (req, *_), (new, accepted) in zip(sampling, decisions):
                assert len(new) == accepted + 1 <= k + 1
                table[row_of[req.request_id], :1 + len(new)] = torch.tensor([len(new), *new])
            for job in draft_jobs:
                d = job.req.draft_token_ids
                table[row_of[job.req.request_id], k + 2:k + 3 + len(d)] = torch.tensor([len(d), *d])
        table = self.parallel.broadcast_from_last_stage(table.to(self.device)).cpu()
        if decisions is not None:
            return None
        rows = table.tolist()
        decisions = []
        for req, *_ in sampling:
            row = rows[row_of[req.request_id]]
            decisions.append((row[1:1 + row[0]], row[0] - 1))
        drafts = {req.request_id: rows[i][k + 3:k + 3 + max(rows[i][k + 2], 0)] for i, req in enumerate(batch.requests)}
        return decisions, drafts

    def _flush(self, finished: list[Request]) -> list[Request]:
        """Attention DP: the one point every rank reaches every iteration, where what arose on
        some ranks only is exchanged, an empty payload when a rank has nothing: the requests that
        finished (so every rank returns every output) and, when asked for, every rank's iteration
        statistics (invariant 2). Returns every rank's finished requests."""
        comm = self.adp.comm
        if finished and self.plant_gather:
            comm.all_gather_object([r.request_id for r in finished])      # the planted bug
        mine = {"done": [_result(r) for r in finished],
                "stats": self.iteration_stats[-1:] if self.gather_stats else []}
        everyone = comm.all_gather_object(mine)
        done = list(finished)
        for rank, payload in enumerate(everyone):           # a payload's rank owned its requests
            if rank == self.mapping.tp_rank:
                for req in finished:
                    self._count_load(rank, req, -1)
                continue
            self.iteration_stats += payload["stats"]
            for result in payload["done"]:
                req = self.remote.pop(result["request_id"])
                _adopt(req, result)
                done.append(req)
                self._count_load(rank, req, -1)
        return done

    def _record_stats(self, batch: ScheduledBatch) -> None:
        self.iteration_stats.append({
            "iteration": self.num_steps, "rank": self.mapping.rank, "requests": len(batch),
            "tokens": sum(batch.num_tokens), "running": len(self.scheduler.running),
            "waiting": len(self.scheduler.waiting), "free_kv_blocks": self.blocks.num_free})

    def _append(self, req: Request, tokens: list[int]) -> bool:
        """Append the step's new tokens one by one; True when the request finished (tokens after
        the one that finished it are dropped)."""
        for token in tokens:
            req.output_token_ids.append(token)
            reason = self._finish_reason(req, token)
            if reason:
                self.scheduler.finish(req, reason)
                return True
        return False

    def _draft_job(self, req: Request, first_row: int, start: int) -> DraftJob:
        """The MTP catch-up range of a request this step computed, and how many drafts to propose:
        no more than can be used before max_tokens or the model length."""
        end = min(req.num_computed_tokens, req.num_tokens - 1)   # positions whose next token is known
        rows = list(range(first_row + req.num_mtp_computed - start, first_row + end - start))
        drafts = 0
        if req.num_computed_tokens == req.num_tokens - 1:          # decoding: draft for the next step
            drafts = min(self.mtp_nextn, req.params.max_tokens - len(req.output_token_ids) - 1,
                         self.max_model_len - req.num_tokens)
            # Drafting writes the MTP cache up to position end + drafts - 2; the target's blocks
            # may not reach that far after a short acceptance.
            while drafts > 0 and not self.blocks.allocate(req.request_id, end + drafts - 1):
                drafts -= 1
        return DraftJob(req, req.num_mtp_computed, end, rows, max(drafts, 0))

    def _collect_context_logits(self, req: Request, n: int, last: int, hidden: torch.Tensor) -> None:
        start = req.num_computed_tokens
        lo = max(start, req.num_context_logits)          # a recomputed prefix was collected already
        hi = min(start + n, len(req.prompt_token_ids))
        if lo < hi:
            first = last - n + 1 - start                 # flat row of position 0
            req.context_logits.append(self.runner.logits(hidden, slice(first + lo, first + hi)).cpu())

    def _finish_reason(self, req: Request, token: int) -> str | None:
        p = req.params
        if not p.ignore_eos and token in self.cfg.eos_token_ids:
            return "stop"
        if p.stop:
            text = self.tokenizer.decode(req.output_token_ids)
            hits = [i for i in (text.find(s) for s in p.stop) if i >= 0]
            if hits:
                req.stop_text_end = min(hits)
                return "stop"
        if len(req.output_token_ids) >= p.max_tokens or req.num_tokens >= self.max_model_len:
            return "length"
        return None


def _result(req: Request) -> dict:
    """What another rank needs of a finished request to return it as its own."""
    return {"request_id": req.request_id, "output_token_ids": req.output_token_ids,
            "finish_reason": req.finish_reason, "stop_text_end": req.stop_text_end, "spec": req.spec,
            "context_logits": req.context_logits}


def _adopt(req: Request, result: dict) -> None:
    req.output_token_ids = list(result["output_token_ids"])
    req.finish_reason, req.stop_text_end = result["finish_reason"], result["stop_text_end"]
    req.spec, req.context_logits = result["spec"], result["context_logits"]
    req.status = Status.FINISHED


_LAYER = re.compile(r"model\.layers\.(\d+)\.")
_TOP_LEVEL = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}


def _held_elsewhere(targets: dict, num_layers: int):
    """A predicate on checkpoint names: tensors of this model that another pipeline stage holds,
    or of an MTP module that is not in use here. Anything else the rank does not expect is an
    error (a wrong checkpoint), not something to skip."""
    def match(name: str) -> bool:
        if name in targets:
            return False
        m = _LAYER.match(name)
        if m is not None:
            return int(m.group(1)) < num_layers
        return name in _TOP_LEVEL
    return match

