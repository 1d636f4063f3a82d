"""Speculative decoding with MTP drafts: verification (greedy or rejection sampling) and the
acceptance statistics DESIGN.md defines.

One verify step of a request with K drafts d_1..d_K: the target model runs [t, d_1, ..., d_K] in
one forward, giving K+1 distributions p_0..p_K. Draft d_i is accepted while it survives:
  greedy    d_i == argmax p_{i-1}
  sampling  with probability min(1, p_{i-1}(d_i) / q_i(d_i)), q_i being the draft's distribution;
            at the first rejection the token is drawn from max(0, p_{i-1} - q_i), renormalised.
If every draft survives, a bonus token is drawn from p_K. Either way the target's output
distribution is unchanged (Leviathan et al., 2023), and greedy output is token for token the same.

A step verifies all its requests, greedy and sampling, with device operations only (verify_batch);
the engine reads every result back in one transfer, its one host synchronisation of verification.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .device import to_device
from .sampling import SamplingParams, draw, filtered_probs


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

    @classmethod
    def from_dict(cls, data: dict) -> "SpecStats":
        """The counts back from as_dict()."""
        steps = data["verify_steps"]
        return cls(steps, data["proposed"], data["accepted"], [round(r * steps) for r in data["position_rates"]])

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


@torch.inference_mode()
def verify_batch(logits: torch.Tensor, drafts: list[list[int]], draft_probs: list[torch.Tensor | None],
                 params: list[SamplingParams], generators: list[torch.Generator | None],
                 row_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Verify a step's requests together, with device operations only: nothing is read back to
    the host here, so that the caller reads every request's result in one transfer (`unpack`).

    logits [R, V] fp32: request b's K_b + 1 rows (at [t, d_1..d_K]) follow those of the requests
    before it; drafts[b]: its K_b drafts; draft_probs[b]: the distributions [K_b, V] they were
    drawn from (None when greedy or K_b = 0); a sampling request draws from its own generator:
    its K acceptance draws (uniform), then one token. row_tokens [R] (device): the input token at
    each logits row; given, the drafts are read there (drafts[b] then only counts them: the host
    may hold placeholders), else from the host lists.
    Returns an int64 tensor [B, 2 + max K_b] on logits' device: per request, the number of drafts
    accepted n_b, then its new tokens (the accepted drafts and one more) in the next n_b + 1 columns."""
    device, counts = logits.device, [len(d) for d in drafts]
    k_max = max(counts, default=0)
    if not drafts:
        return torch.empty((0, 2), dtype=torch.long, device=device)
    if k_max == 0 and all(p.greedy for p in params):     # plain greedy decoding: the argmax alone
        target = logits.argmax(dim=-1)
        return torch.stack([torch.zeros_like(target), target], dim=1)
    # Each request's rows (its last one repeated as padding), drafts (or the rows of row_tokens
    # holding them) and count, in one copy.
    layout, offset = [], 0
    for d, k in zip(drafts, counts):
        draft_part = [offset + 1 + min(j, k - 1) if k else offset for j in range(k_max)] if row_tokens is not None \
            else list(d) + [0] * (k_max - k)
        layout.append([offset + min(j, k) for j in range(k_max + 1)] + draft_part + [k])
        offset += k + 1
    layout = to_device(layout, device)
    rows, draft_ids, count = layout[:, :k_max + 1], layout[:, k_max + 1:2 * k_max + 1], layout[:, -1]
    if row_tokens is not None:
        draft_ids = row_tokens[draft_ids]
    if any(p.greedy for p in params):
        # Greedy: d_i survives while it is the argmax of p_{i-1}; the new tokens are then the
        # argmax at [t, d_1..d_n]. Computed for every row; sampling requests overwrite theirs below.
        target = logits.argmax(dim=-1)[rows]
        survived = (target[:, :k_max] == draft_ids) & (torch.arange(k_max, device=device) < count[:, None])
        out = torch.cat([survived.cumprod(dim=1).sum(dim=1, keepdim=True), target], dim=1)
    else:
        out = torch.empty((len(drafts), k_max + 2), dtype=torch.long, device=device)
    first = 0
    for b, (p, k) in enumerate(zip(params, counts)):
        if not p.greedy:
            out[b] = _rejection_sample(logits[first:first + k + 1], draft_ids[b, :k], draft_probs[b], p,
                                       generators[b], k_max)
        first += k + 1
    return out


def _rejection_sample(logits: torch.Tensor, drafts: torch.Tensor, q: torch.Tensor | None, params: SamplingParams,
                      generator: torch.Generator | None, k_max: int) -> torch.Tensor:
    """One sampling request's row of verify_batch: [n, the new tokens, padding] (device ops only)."""
    p = filtered_probs(logits, params)
    k = len(drafts)
    if k:
        u = torch.rand(k, generator=generator, device=p.device)
        # Accept d_i with probability min(1, p_{i-1}(d_i) / q_i(d_i)): u < ratio, in float64 as
        # when Python floats compared them.
        index = drafts[:, None]
        ratio = p[:k].gather(1, index).double() / q.gather(1, index).double().clamp(min=1e-30)
        n = (u.double() < ratio[:, 0]).cumprod(dim=0).sum()
        # Where d_{n+1} is rejected (n < k) the token comes from max(0, p_n - q_{n+1}) renormalised
        # (p_n itself when nothing is left); if every draft survived, from p_k.
        residual = (p[:k] - q).clamp(min=0)
        total = residual.sum(dim=-1, keepdim=True)
        dist = torch.cat([torch.where(total > 0, residual / total, p[:k]), p[k:]]).index_select(0, n.view(1))
    else:
        n, dist = torch.zeros(1, dtype=torch.long, device=p.device), p
    row = torch.cat([n.view(1), drafts, torch.zeros(k_max - k + 1, dtype=torch.long, device=p.device)])
    return row.scatter_(0, n.view(1) + 1, draw(dist, generator))


def unpack(results: list[list[int]]) -> list[tuple[list[int], int]]:
    """verify_batch's rows, read back to the host: (new tokens, drafts accepted) per request."""
    return [(row[1:row[0] + 2], row[0]) for row in results]


def verify(target_logits: torch.Tensor, drafts: list[int], draft_probs: torch.Tensor | None,
           params: SamplingParams, generator: torch.Generator | None) -> tuple[list[int], int]:
    """One request's verification (verify_batch of one): target_logits [K+1, V] fp32 at the
    positions of [t, d_1..d_K]; draft_probs [K, V], the distributions the drafts were sampled
    from (None when greedy). Returns (new tokens: the accepted drafts then one more, number of
    drafts accepted)."""
    return unpack(verify_batch(target_logits, [drafts], [draft_probs], [params], [generator]).tolist())[0]
