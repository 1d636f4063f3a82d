"""Sampling parameters and the sampler: greedy, temperature, top-k, top-p, per-request seeds."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 0.0          # 0 means greedy
    top_k: int = 0                    # 0 means no limit
    top_p: float = 1.0
    seed: int | None = None           # a request with a seed samples the same tokens every run
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    return_context_logits: bool = False
    # Score the prompt from this position on: each token's log-probability given the tokens before
    # it, and whether it is the greedy choice (RequestOutput.prompt_logprobs). Log-likelihood
    # evaluation: the prompt is context + continuation, and this is the continuation's start.
    prompt_logprobs_from: int | None = None

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.prompt_logprobs_from is not None and self.prompt_logprobs_from < 1:
            raise ValueError(f"prompt_logprobs_from must be >= 1 (the first token has no context), "
                             f"got {self.prompt_logprobs_from}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def filtered_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution a request samples from: softmax(logits / T) restricted to top-k and top-p."""
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token is always kept).
        drop = (sorted_probs.cumsum(-1) - sorted_probs) >= params.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token from `probs` [..., V] per row, as a device tensor (no host read): argmax(p / E)
    with E ~ Exp(1), which picks token i with probability p_i / sum(p). It is what
    torch.multinomial(probs, 1) computes for one sample, from the same draws of the generator, but
    without multinomial's checks of the input, each a read back to the host (so NaN probabilities,
    e.g. from NaN logits, give some token instead of an error)."""
    return (probs / torch.empty_like(probs).exponential_(generator=generator)).argmax(dim=-1)


def sample(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
           ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """One token per row of `logits` [B, V] (fp32), greedy rows in one batched argmax, and each
    row's distribution (None for greedy rows): a draft is verified against the one it came from.
    The tokens stay on the device ([B]): the caller reads them back when it needs them."""
    tokens = logits.argmax(dim=-1)
    probs: list[torch.Tensor | None] = [None] * len(params)
    for i, p in enumerate(params):
        if not p.greedy:
            probs[i] = filtered_probs(logits[i], p)
            tokens[i] = draw(probs[i], generators[i])
    return tokens, probs
