"""A request's state as it moves through the engine, and the outputs handed back to the caller."""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .sampling import SamplingParams
from .speculative import SpecStats

if TYPE_CHECKING:
    from .prepare import DeviceTokens
    from .tokenizer import IncrementalText

# A draft token the host does not know (its value is on the device: Request.draft_device). Never a
# valid id, so a path that fed it to the model unreplaced would fail rather than compute on it.
DRAFT_ON_DEVICE = -1


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Request:
    request_id: int
    prompt_token_ids: list[int]
    params: SamplingParams
    output_token_ids: list[int] = field(default_factory=list)
    status: Status = Status.WAITING
    # Tokens whose keys and values are in the cache. A preempted request drops back to 0 and
    # recomputes prompt + output so far.
    num_computed_tokens: int = 0
    finish_reason: str | None = None
    stop_text_end: int | None = None       # where a matched stop string starts in the output text
    output_text: IncrementalText | None = None   # the output's text so far, kept for the stop strings
    context_logits: list[torch.Tensor] = field(default_factory=list)   # chunks, [n, vocab] each
    # params.prompt_logprobs_from: chunks of [n, 2] device tensors, (log-probability, is greedy)
    # per scored prompt token, in order
    prompt_scores: list[torch.Tensor] = field(default_factory=list)
    # A shared prompt prefix (LLM.score): (the request whose cache holds it, its tokens), forked
    # at admission; and the tokens of this request's own cache to keep for others when it finishes
    cached_prefix: tuple[int, int] | None = None
    keep_cache_tokens: int = 0
    generator: torch.Generator | None = None
    # Speculative decoding: the drafts the next step verifies (and the distributions they were
    # drawn from, None when greedy), how many positions have valid MTP cache entries, and counts.
    # Without pipeline parallelism the drafts' values stay on the device (draft_device) and
    # draft_token_ids holds DRAFT_ON_DEVICE for each.
    draft_token_ids: list[int] = field(default_factory=list)
    draft_probs: list[torch.Tensor | None] = field(default_factory=list)
    draft_device: DeviceTokens | None = None
    num_mtp_computed: int = 0
    spec: SpecStats = field(default_factory=SpecStats)

    def keep_drafts(self, n: int) -> None:
        del self.draft_token_ids[n:], self.draft_probs[n:]
        if self.draft_device is not None and n < self.draft_device.count:
            self.draft_device = dataclasses.replace(self.draft_device, count=n) if n else None

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_context_logits(self) -> int:
        return sum(c.shape[0] for c in self.context_logits)

    @property
    def num_prompt_scores(self) -> int:
        return sum(c.shape[0] for c in self.prompt_scores)


@dataclass
class CompletionOutput:
    index: int
    token_ids: list[int]
    text: str
    finish_reason: str | None


@dataclass
class RequestOutput:
    request_id: int
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    context_logits: torch.Tensor | None = None    # [prompt_len, vocab] fp32, when asked for
    finished: bool = True
    spec: SpecStats | None = None                 # acceptance counts, with MTP
    # With params.prompt_logprobs_from = k: per prompt token from k on, its log-probability given
    # the tokens before it, and whether it is the greedy (argmax) choice there
    prompt_logprobs: list[float] | None = None
    prompt_greedy: list[bool] | None = None


@dataclass
class ContinuationScore:
    """A continuation's log-likelihood after its context (LLM.score), token by token."""
    logprobs: list[float]          # each token's log-probability given everything before it
    greedy: list[bool]             # whether it is the argmax there

    @property
    def logprob(self) -> float:
        return sum(self.logprobs)

    @property
    def is_greedy(self) -> bool:
        """Greedy decoding from the context would produce exactly this continuation."""
        return all(self.greedy)
