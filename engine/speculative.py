"""Speculative decoding with MTP drafts: verification (greedy or rejection sampling) and the
acceptance statistics DESIGN.md defines.

One verify step of a request with K drafts d_1..d_K: the target model runs [t, d_1, ..., d_K] in
one forward, giving K+1 distributions p_0..p_K. Draft d_i is accepted while it survives:
  greedy    d_i == argmax p_{i-1}
  sampling  with probability min(1, p_{i-1}(d_i) / q_i(d_i)), q_i being the draft's distribution;
            at the first rejection the token is drawn from max(0, p_{i-1} - q_i), renormalised.
If every draft survives, a bonus token is drawn from p_K. Either way the target's output
distribution is unchanged (Leviathan et al., 2023), and greedy output is token for token the same.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .sampling import SamplingParams, filtered_probs


@dataclass
class SpecStats:
    """Counted over verify steps that carried drafts."""
    steps: int = 0
    proposed: int = 0
    accepted: int = 0
    accepted_at: list[int] = field(default_factory=list)   # [i]: steps whose first i+1 drafts were all accepted

    def record(self, num_drafts: int, num_accepted: int) -> None:
        if num_drafts == 0:
            return
        self.steps += 1
        self.proposed += num_drafts
        self.accepted += num_accepted
        if len(self.accepted_at) < num_drafts:
            self.accepted_at += [0] * (num_drafts - len(self.accepted_at))
        for i in range(num_accepted):
            self.accepted_at[i] += 1

    @classmethod
    def total(cls, stats) -> "SpecStats":
        """The sum of several requests' counts (each output's `.spec`; None ones are skipped)."""
        out = cls()
        for s in stats:
            if s is not None:
                out.merge(s)
        return out

    def merge(self, other: "SpecStats") -> None:
        self.steps += other.steps
        self.proposed += other.proposed
        self.accepted += other.accepted
        n = max(len(self.accepted_at), len(other.accepted_at))
        self.accepted_at = [a + b for a, b in zip(self.accepted_at + [0] * (n - len(self.accepted_at)),
                                                  other.accepted_at + [0] * (n - len(other.accepted_at)))]

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def mean_acceptance_length(self) -> float:
        """Tokens gained per verify step: the accepted drafts plus the bonus token."""
        return 1.0 + self.accepted / self.steps if self.steps else 1.0

    @property
    def position_rates(self) -> list[float]:
        return [a / self.steps for a in self.accepted_at] if self.steps else []

    def as_dict(self) -> dict:
        return {"verify_steps": self.steps, "proposed": self.proposed, "accepted": self.accepted,
                "acceptance_rate": self.acceptance_rate, "mean_acceptance_length": self.mean_acceptance_length,
                "position_rates": self.position_rates}


def verify(target_logits: torch.Tensor, drafts: list[int], draft_probs: torch.Tensor | None,
           params: SamplingParams, generator: torch.Generator | None) -> tuple[list[int], int]:
    """target_logits: [K+1, V] fp32 at the positions of [t, d_1..d_K]; draft_probs: [K, V], the
    distributions the drafts were sampled from (None when greedy). Returns (new tokens: the
    accepted drafts then one more, number of drafts accepted)."""
    k = len(drafts)
    if params.greedy:
        return accept_greedy(target_logits.argmax(dim=-1).tolist(), drafts)
    p = filtered_probs(target_logits, params)
    u = torch.rand(k, generator=generator, device=p.device).tolist() if k else []
    for i, d in enumerate(drafts):
        ratio = float(p[i, d]) / max(float(draft_probs[i, d]), 1e-30)
        if u[i] >= ratio:                                   # rejected: draw from the residual
            residual = (p[i] - draft_probs[i]).clamp(min=0)
            total = float(residual.sum())
            dist = residual / total if total > 0 else p[i]
            return drafts[:i] + [int(torch.multinomial(dist, 1, generator=generator))], i
    return drafts + [int(torch.multinomial(p[k], 1, generator=generator))], k


def accept_greedy(target: list[int], drafts: list[int]) -> tuple[list[int], int]:
    """Greedy verification from the target's argmax at [t, d_1..d_K] (the engine takes the
    argmax of every greedy row of a step at once)."""
    n = 0
    while n < len(drafts) and drafts[n] == target[n]:
        n += 1
    return drafts[:n] + [target[n]], n
