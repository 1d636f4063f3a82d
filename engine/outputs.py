"""The typed objects one engine step passes between its parts, and what the engine reports per rank.

    Scheduler.schedule()            -> SchedulerOutput     which requests run, how many tokens each
    ModelRunner.execute(...)        -> ModelRunnerOutput   per request: rows, context logits, and
                                                           (last stage) the verified new tokens
    Scheduler.update_from_output()  -> StepUpdate          finished requests, the MTP work to do
    ModelRunner.draft(...)          -> Drafts              the next step's draft tokens
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .prepare import DeviceTokens
from .request import Request


@dataclass
class SchedulerOutput:
    requests: list[Request] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)     # tokens of each request computed this step

    def __len__(self) -> int:
        return len(self.requests)


@dataclass
class RequestResult:
    """What one forward did for one scheduled request."""
    req: Request
    start: int                     # its first position computed this step
    first_row: int                 # its first row in the step's hidden states
    num_known: int                 # known tokens computed (the rest of its chunk were drafts)
    samples: bool                  # all its known tokens are in the cache now: a token is chosen
    context_logits: torch.Tensor | None = None       # new prompt rows' logits, when asked for
    prompt_scores: torch.Tensor | None = None        # new scored prompt tokens: [n, 2] (logprob, greedy)
    new_token_ids: list[int] | None = None           # when it samples: accepted drafts, then one more
    num_accepted: int = 0

    def rows(self) -> list[int]:
        """Rows whose logits choose tokens: its last known token, then one per draft behind it."""
        last = self.first_row + self.num_known - 1
        return list(range(last, last + 1 + len(self.req.draft_token_ids)))


@dataclass
class ModelRunnerOutput:
    results: list[RequestResult]              # in scheduled order
    hidden: torch.Tensor | None = None         # the final hidden states (last stage): the drafter's input


@dataclass
class DraftJob:
    """One request's MTP work after a target forward: catch up the module's KV cache on the
    positions [start, end) whose next token is now known (their target hidden states are the rows
    `hidden_rows` of this step's forward), then, if num_drafts > 0, propose that many tokens."""
    req: Request
    start: int
    end: int
    hidden_rows: list[int]
    num_drafts: int


@dataclass
class StepUpdate:
    finished: list[Request]
    draft_jobs: list[DraftJob]


# request id -> (draft tokens, the distribution each was drawn from; None when greedy or not known
# here). The tokens are host values under pipeline parallelism (broadcast to the other stages),
# else on the device only (prepare.DeviceTokens: the next step's forward and verification read them there).
Drafts = dict[int, tuple[list[int] | DeviceTokens, list[torch.Tensor | None]]]


@dataclass
class IterationStats:
    """One attention-DP iteration of one rank."""
    iteration: int
    rank: int
    requests: int
    tokens: int
    running: int
    waiting: int
    free_kv_blocks: int


@dataclass
class RankInfo:
    """What a rank holds and did (`LLM.rank_info()`; `trtx eval --json` writes one per rank)."""
    rank: int
    tp_rank: int
    pp_rank: int
    layers: list[int]                  # its decoder layers
    mtp_module: bool                   # whether it holds the MTP module
    tensors: list[str]                 # the checkpoint tensors it loaded
    parameter_bytes: int
    # attention DP: requests this rank served, its iterations (idle ones: a dummy forward), and
    # whose iteration statistics reached it
    requests_served: int = 0
    iterations: int = 0
    idle_iterations: list[int] = field(default_factory=list)
    stats_from_ranks: list[int] = field(default_factory=list)
    warmup: list[list[str]] = field(default_factory=list)      # [shape, "ran" or why skipped]
    # decode graphs: the sizes captured, and this rank's forwards by kind ("eager", "graph-N":
    # replayed padded to N; with MTP the drafter's passes, "mtp-eager" and "mtp-graph-N", where
    # it has graphs: not under attention DP); under attention DP the same on every rank
    graphs: list[int] = field(default_factory=list)
    forwards: dict[str, int] = field(default_factory=dict)
    # bytes each graph's capture added to its pool (CUDA; 0 on CPU): "N" the decode step's,
    # "mtp-catch-up-N" and "mtp-draft-N" the drafter's
    graph_memory: dict[str, int] = field(default_factory=dict)
