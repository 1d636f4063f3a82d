"""Pipeline parallelism at run time: a step's forward cut into micro-batches that flow through the
stages, and the one broadcast a step that carries the last stage's decisions to the others.

Every stage runs the same scheduler over the same request state (SPMD). Only the last stage has
logits, so it verifies, samples and drafts; the other stages learn the new tokens and drafts from
`share_decisions` and apply them to their own copy of the state (Scheduler.update_from_output).
"""
from __future__ import annotations

import torch

from .outputs import DraftJob, Drafts, ModelRunnerOutput, SchedulerOutput
from .parallel import Parallel, split_evenly
from .prepare import SeqChunk


def pipelined_forward(runner, parallel: Parallel, chunks: list[SeqChunk],
                      path: str) -> tuple[torch.Tensor | None, list[int]]:
    """The batch through this stage's layers: (final hidden states on the last stage, None
    elsewhere; each chunk's last row in them). The batch is cut into up to pp_size micro-batches:
    a stage sends micro-batch m on (without waiting) and starts m+1 while the next stage works on
    m, so the stages compute at the same time instead of in turn."""
    m, cfg = parallel.mapping, runner.model_config
    outs, sends, last_index, offset = [], [], [], 0
    parts = min(m.pp_size, len(chunks))
    for group in (split_evenly(len(chunks), parts, i) for i in range(parts)):
        inputs = runner.prepare([chunks[i] for i in group], path)
        tokens = len(inputs.input_ids)
        hidden = residual = None
        if not m.is_first_stage:    # hidden state and residual, stacked: [2, T, d]
            hidden, residual = parallel.recv_prev((2, tokens, cfg.hidden_size), cfg.dtype).unbind()
        out = runner.forward(inputs, hidden, residual)
        if m.is_last_stage:
            outs.append(out)
        else:
            pair = torch.stack(out)
            sends.append((parallel.send_next(pair), pair))
        last_index += [offset + row for row in inputs.last_index]
        offset += tokens
    for work, _tensor in sends:
        work.wait()
    return (torch.cat(outs) if m.is_last_stage else None), last_index


def share_decisions(parallel: Parallel, nextn: int, sched: SchedulerOutput, out: ModelRunnerOutput,
                    jobs: list[DraftJob] | None = None, drafts: Drafts | None = None) -> Drafts:
    """One broadcast from the last stage: per scheduled request, its new tokens (if it sampled)
    and its drafts (if it has a draft job). A fixed-width int64 row each, [n_new, new...,
    n_drafts, drafts...], -1 where there is none, so the receivers know the shape without a
    second message. The last stage passes its draft jobs and drafts; the others pass neither and
    get the new tokens written into `out` and the drafts returned."""
    width = 2 * nextn + 3
    table = torch.full((len(sched), width), -1, dtype=torch.long)
    sending = drafts is not None
    if sending:
        row_of = {r.req.request_id: i for i, r in enumerate(out.results)}
        for i, r in enumerate(out.results):
            if r.samples:
                assert len(r.new_token_ids) == r.num_accepted + 1 <= nextn + 1
                table[i, :1 + len(r.new_token_ids)] = torch.tensor([len(r.new_token_ids), *r.new_token_ids])
        for job in jobs:
            tokens = drafts.get(job.req.request_id, ([], []))[0]
            table[row_of[job.req.request_id], nextn + 2:nextn + 3 + len(tokens)] = torch.tensor([len(tokens), *tokens])
    table = parallel.broadcast_from_last_stage(table.to(parallel.device)).cpu()
    if sending:
        return drafts
    received: Drafts = {}
    for r, row in zip(out.results, table.tolist()):
        if r.samples:
            r.new_token_ids, r.num_accepted = row[1:1 + row[0]], row[0] - 1
        tokens = row[nextn + 3:nextn + 3 + max(row[nextn + 2], 0)]
        received[r.req.request_id] = (tokens, [None] * len(tokens))     # only the last stage verifies
    return received
