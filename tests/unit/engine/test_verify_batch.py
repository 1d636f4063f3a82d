"""Verification of a whole step on the device (speculative.verify_batch): one host read per step
for a mixed greedy and sampling batch, the target distribution kept at every position, each
request's draws from its own generator only, and the draw that replaces torch.multinomial."""
import sys

import pytest
import torch

from tests.helpers.checkpoints import make_mtp_checkpoint
from tests.unit.engine.test_mtp import chi_square_p
from trtx.engine import LLM, SamplingParams
from trtx.engine.model_runner import ModelRunner
from trtx.engine.mtp import MtpDrafter
from trtx.engine.sampling import draw, filtered_probs, sample
from trtx.engine.speculative import unpack, verify_batch

# Every way a tensor's value reaches Python: each is a host synchronisation on a GPU.
HOST_READS = ("tolist", "item", "__float__", "__int__", "__bool__", "__index__", "cpu", "numpy")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_mtp_checkpoint(tmp_path_factory.mktemp("mtp"), seed=3)


def count_host_reads(monkeypatch, cls, method: str, describe=lambda *args: None, ignore_callers=()) -> list:
    """Wrap cls.method: every call appends (describe(*args), the host reads it made, except those
    made directly by functions named in ignore_callers)."""
    calls, counting = [], [False]
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            if counting[0] and sys._getframe(1).f_code.co_name not in ignore_callers:
                calls[-1][1].append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    original_method = getattr(cls, method)

    def wrapped(self, *args):
        calls.append((describe(*args), []))
        counting[0] = True
        try:
            return original_method(self, *args)
        finally:
            counting[0] = False
    monkeypatch.setattr(cls, method, wrapped)
    return calls


MIXED = [SamplingParams(max_tokens=12, ignore_eos=True),
         SamplingParams(max_tokens=12, ignore_eos=True, temperature=0.8, seed=1),
         SamplingParams(max_tokens=12, ignore_eos=True),
         SamplingParams(max_tokens=12, ignore_eos=True, temperature=1.0, top_k=5, top_p=0.9, seed=2)]
PROMPTS = ["Ann has 3 coins.\n", "Tom", "42+17=", "How many cups?\n"]


def test_a_mixed_step_is_verified_with_one_host_read(ckpt, monkeypatch):
    """Greedy and sampling requests with drafts in the same steps: each _verify call reads
    tensors back to the host exactly once (the per-request loop only launches device ops)."""
    steps = count_host_reads(monkeypatch, ModelRunner, "_verify", lambda sampling, hidden, input_ids: {
        ("greedy" if r.req.params.greedy else "sampled") for r in sampling if r.req.draft_token_ids})
    LLM(ckpt, mtp_nextn=2, device="cpu").generate(PROMPTS, MIXED)
    assert [r for kinds, r in steps if kinds == {"greedy", "sampled"}], "no step verified greedy and sampled drafts together"
    assert all(r == ["tolist"] for _, r in steps), steps


def test_drafts_never_come_back_to_the_host(ckpt, monkeypatch):
    """The drafter's catch-up and its draft passes (three depths here, greedy and sampled) read
    nothing back: each depth's tokens feed the next on the device, and the next step's forward
    and verification read the drafts there."""
    steps = count_host_reads(monkeypatch, MtpDrafter, "run", lambda jobs, hidden: max(
        (j.num_drafts for j in jobs), default=0))
    LLM(ckpt, mtp_nextn=3, device="cpu").generate(PROMPTS, MIXED)
    assert any(depth == 3 for depth, _ in steps)
    assert all(r == [] for _, r in steps), steps


@pytest.mark.parametrize("graphs", [False, True])
def test_a_speculative_step_synchronises_with_the_host_once(ckpt, monkeypatch, graphs):
    """Issue 16: at most one host synchronisation per step. A whole engine step with MTP (greedy
    and sampled requests, drafts verified, the catch-up and the next drafts) reads the device
    once: verification's result, which holds the accepted drafts."""
    from trtx.engine.engine_core import EngineCore
    llm = LLM(ckpt, mtp_nextn=2, device="cpu", decode_graphs=graphs)
    # On CPU a graph's SDPA reads its static lengths (free there; on CUDA the Triton kernel reads
    # them on the device, and the SDPA fallback spans the tables' width instead).
    steps = count_host_reads(monkeypatch, EngineCore, "step", ignore_callers=("_sdpa_decode",))
    out = llm.generate(PROMPTS, MIXED)
    assert sum(o.spec.proposed for o in out) > 0
    assert len(steps) > 5 and all(r == ["tolist"] for _, r in steps), steps


def _random_step(g, vocab: int, batch: int, greedy_every: int = 4):
    """A step of `batch` requests: every greedy_every-th greedy, the others sampling with their own
    seeded generator; 0 to 3 drafts each, sampled from a draft distribution unlike the target."""
    counts = [int(torch.randint(0, 4, (1,), generator=g)) for _ in range(batch)]
    logits = torch.randn(sum(counts) + batch, vocab, generator=g) * 1.5
    params, drafts, probs = [], [], []
    for b, k in enumerate(counts):
        q = torch.softmax(torch.randn(k, vocab, generator=g) * 1.5, dim=-1)
        drafts.append([int(torch.multinomial(q[i], 1, generator=g)) for i in range(k)])
        greedy = b % greedy_every == 0
        params.append(SamplingParams() if greedy else SamplingParams(temperature=[1.0, 0.7][b % 2], top_k=[0, 8][b % 3 == 0]))
        probs.append(None if greedy or not k else q)
    return logits, counts, drafts, probs, params


def scalar_verify(logits, drafts, draft_probs, params, generator):
    """The rule as written before verification moved to the device, draft by draft on the host
    (and the oracle verify_batch is held to): accept d_i if u_i < p(d_i) / q(d_i), else draw from
    the residual max(0, p - q) renormalised; all accepted: a bonus token from p_K."""
    k = len(drafts)
    if params.greedy:
        target = logits.argmax(dim=-1).tolist()
        n = 0
        while n < k and drafts[n] == target[n]:
            n += 1
        return drafts[:n] + [target[n]], n
    p = filtered_probs(logits, params)
    u = torch.rand(k, generator=generator).tolist() if k else []
    for i, d in enumerate(drafts):
        if u[i] >= float(p[i, d]) / max(float(draft_probs[i, d]), 1e-30):
            residual = (p[i] - draft_probs[i]).clamp(min=0)
            dist = residual / float(residual.sum()) if float(residual.sum()) > 0 else p[i]
            return drafts[:i] + [int(torch.multinomial(dist, 1, generator=generator))], i
    return drafts + [int(torch.multinomial(p[k], 1, generator=generator))], k


def test_each_request_matches_the_scalar_rule():
    """verify_batch's row of a request equals the scalar rule on that request alone with the same
    generator state: a request's draws come from its generator only, whatever the batch."""
    g = torch.Generator().manual_seed(7)
    for trial in range(20):
        logits, counts, drafts, probs, params = _random_step(g, vocab=16, batch=9)
        gens = [torch.Generator().manual_seed(100 * trial + b) for b in range(len(counts))]
        batched = unpack(verify_batch(logits, drafts, probs, params, gens).tolist())
        first = 0
        for b, k in enumerate(counts):
            alone = scalar_verify(logits[first:first + k + 1], drafts[b], probs[b], params[b],
                                  torch.Generator().manual_seed(100 * trial + b))
            assert batched[b] == alone, (trial, b)
            first += k + 1
        # Seeded: the same generators' states give the same step.
        again = [torch.Generator().manual_seed(100 * trial + b) for b in range(len(counts))]
        assert unpack(verify_batch(logits, drafts, probs, params, again).tolist()) == batched


def test_greedy_rows_take_the_longest_matching_prefix_and_a_bonus():
    logits = torch.full((4 + 1 + 3, 5), -1.0)
    for row, best in enumerate([2, 4, 1, 3, 0, 1, 2, 4]):
        logits[row, best] = 1.0
    sp = SamplingParams()
    out = verify_batch(logits, [[2, 4, 0], [], [1, 3]], [None, None, None], [sp] * 3, [None] * 3)
    assert unpack(out.tolist()) == [([2, 4, 1], 2), ([0], 0), ([1, 2], 1)]


def test_batched_rejection_sampling_keeps_the_target_distribution():
    """Many sampling requests verified together, each with its own generator, against fixed
    targets p_0, p_1 and drafts from different distributions: the first new token follows p_0 and,
    when the first draft survived, the second follows p_1. Greedy requests in the same batch get
    the argmax prefix."""
    g = torch.Generator().manual_seed(1)
    vocab, batch, rounds = 10, 250, 40
    target = torch.randn(3, vocab, generator=g) * 1.5
    q = torch.softmax(torch.randn(2, vocab, generator=g) * 1.5, dim=-1)
    sp = SamplingParams(temperature=1.0)
    p = filtered_probs(target, sp)
    firsts, seconds = torch.zeros(vocab), torch.zeros(vocab)
    argmax = target.argmax(dim=-1).tolist()
    for r in range(rounds):
        drafts = [[int(torch.multinomial(q[i], 1, generator=g)) for i in range(2)] for _ in range(batch)]
        greedy = [b % 10 == 0 for b in range(batch)]
        params = [SamplingParams() if gr else sp for gr in greedy]
        gens = [torch.Generator().manual_seed(r * batch + b) for b in range(batch)]
        out = verify_batch(target.repeat(batch, 1), drafts, [None if gr else q for gr in greedy], params, gens)
        for b, (tokens, n) in enumerate(unpack(out.tolist())):
            assert len(tokens) == n + 1 and tokens[:n] == drafts[b][:n]
            if greedy[b]:
                n_ref = next((i for i in range(2) if drafts[b][i] != argmax[i]), 2)
                assert (tokens, n) == (argmax[:n_ref + 1], n_ref)
                continue
            firsts[tokens[0]] += 1
            if n >= 1:
                seconds[tokens[1]] += 1
    assert 0 < seconds.sum() < firsts.sum()                 # both acceptance and rejection ran
    assert chi_square_p(firsts, p[0]) > 1e-3
    assert chi_square_p(seconds, p[1]) > 1e-3


def test_draw_is_multinomial_s_draw_without_its_host_reads():
    """draw() picks what torch.multinomial(probs, 1) picks from the same generator state, and
    sample() keeps every row's token on the device."""
    probs = torch.softmax(torch.randn(6, 30, generator=torch.Generator().manual_seed(0)), dim=-1)
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(50):
        for row in probs:
            assert int(draw(row, a)) == int(torch.multinomial(row, 1, generator=b))
    params = [SamplingParams(), SamplingParams(temperature=1.0), SamplingParams(temperature=0.5, top_k=3)]
    gens = [None, torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    tokens, dists = sample(probs[:3].log(), params, gens)
    tokens = tokens.tolist()
    assert tokens[0] == int(probs[0].argmax()) and dists[0] is None
    ref = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    assert tokens[1:] == [int(torch.multinomial(dists[i], 1, generator=ref[i - 1])) for i in (1, 2)]


def test_drafts_read_on_the_device_verify_as_host_drafts():
    """The engine passes row_tokens (the step's input token at each logits row) and placeholders
    for the drafts: every request's result is the one its host drafts give, greedy and sampled,
    with 0 to 3 drafts, whatever the other requests' counts."""
    g = torch.Generator().manual_seed(11)
    for trial in range(20):
        logits, counts, drafts, probs, params = _random_step(g, vocab=16, batch=7)
        # The input tokens of the step's logits rows: request b's [t, d_1..d_K], t any token.
        row_tokens = torch.tensor([tok for d in drafts for tok in [int(torch.randint(16, (1,), generator=g)), *d]])
        seeds = [int(torch.randint(1 << 30, (1,), generator=g)) for _ in drafts]
        gens = lambda: [torch.Generator().manual_seed(s) for s in seeds]
        want = unpack(verify_batch(logits, drafts, probs, params, gens()).tolist())
        placeholders = [[-1] * k for k in counts]
        got = unpack(verify_batch(logits, placeholders, probs, params, gens(), row_tokens).tolist())
        assert got == want, trial
