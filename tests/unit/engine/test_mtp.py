"""MTP speculative decoding on random checkpoints: the module against the training code's
definition, greedy losslessness under preemption and chunked prefill, the acceptance metrics on a
hand-built trace, and rejection sampling against the target distribution."""
import math

import pytest
import torch

from tests.helpers.checkpoints import make_mtp_checkpoint, training_script
from trtx.engine import LLM, SamplingParams
from trtx.engine.prepare import SeqChunk
from trtx.engine.speculative import SpecStats, verify

PROMPTS = ["Ann has 3 coins.\n", "Tom", "How many cups does Zoe have?\n", "x" * 40, "42+17="]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_mtp_checkpoint(tmp_path_factory.mktemp("mtp"), seed=3)


def test_mtp_module_matches_the_training_definition(ckpt):
    """Teacher-forced: the engine's MTP logits at every position equal the training model's."""
    from safetensors.torch import load_file
    t = training_script()

    llm = LLM(ckpt, mtp_nextn=1, device="cpu")
    cfg = dict(t.CONFIG, **{k: llm.model_config.__dict__[k] for k in ("hidden_size", "intermediate_size",
               "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim")})
    ref = t.TrainModel(cfg, llm.model_config.vocab_size)
    ref.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    ids = llm.tokenizer.encode("Kim has 14 cards. She drops 14. How many?\n14-14=0.")
    with torch.no_grad():
        base_ref, mtp_ref = (x[0] for x in ref(torch.tensor([ids])))

    engine = llm.engine
    engine.blocks.allocate(0, len(ids))
    table = engine.blocks.tables[0]
    inputs = engine.runner.prepare([SeqChunk(ids, 0, table)])
    hidden = engine.runner.forward(inputs)
    torch.testing.assert_close(engine.runner.model.compute_logits(hidden), base_ref, atol=1e-4, rtol=1e-4)
    out, _ = engine.runner.drafter.forward([SeqChunk(ids[1:], 0, table)], hidden, [list(range(len(ids) - 1))])
    torch.testing.assert_close(engine.runner.model.compute_logits(out), mtp_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("nextn", [1, 2, 3])
def test_greedy_speculation_is_lossless(ckpt, nextn):
    sp = SamplingParams(max_tokens=24, ignore_eos=True)
    ref = [o.outputs[0].token_ids for o in LLM(ckpt, device="cpu").generate(PROMPTS, sp)]
    # A cache too small for the batch (preemption) and a token budget that chunks the prompts.
    llm = LLM(ckpt, mtp_nextn=nextn, device="cpu", block_size=4, num_kv_blocks=24, max_num_tokens=16)
    outs = llm.generate(PROMPTS, sp)
    assert [o.outputs[0].token_ids for o in outs] == ref
    assert llm.engine.scheduler.num_preemptions > 0
    for o in outs:
        assert o.spec.steps > 0 and o.spec.proposed <= nextn * o.spec.steps
    assert llm.engine.blocks.num_free == llm.engine.blocks.num_blocks - 1


def test_metrics_on_a_hand_built_trace():
    s = SpecStats()
    # (drafts proposed, accepted) per verify step, K = 3; a step without drafts is not counted.
    for proposed, accepted in [(3, 3), (3, 0), (3, 1), (2, 2), (0, 0), (3, 2)]:
        s.record(proposed, accepted)
    assert (s.steps, s.proposed, s.accepted) == (5, 14, 8)
    assert s.acceptance_rate == 8 / 14
    assert s.mean_acceptance_length == 1 + 8 / 5
    assert s.position_rates == [4 / 5, 3 / 5, 1 / 5]     # first 1 / 2 / 3 drafts all accepted
    other = SpecStats()
    other.record(1, 1)
    s.merge(other)
    assert (s.steps, s.proposed, s.accepted, s.accepted_at) == (6, 15, 9, [5, 3, 1])


def test_verify_greedy_takes_the_longest_matching_prefix_and_a_bonus():
    logits = torch.full((4, 5), -1.0)
    for row, best in enumerate([2, 4, 1, 3]):
        logits[row, best] = 1.0
    sp = SamplingParams()
    assert verify(logits, [2, 4, 0], None, sp, None) == ([2, 4, 1], 2)
    assert verify(logits, [2, 4, 1], None, sp, None) == ([2, 4, 1, 3], 3)
    assert verify(logits, [0, 4, 1], None, sp, None) == ([2], 0)


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Upper tail of Pearson's chi-square, pooling cells expected below 5 into one."""
    n = counts.sum()
    expected = probs * n
    keep = expected >= 5
    obs = torch.cat([counts[keep], counts[~keep].sum().view(1)])
    exp = torch.cat([expected[keep], expected[~keep].sum().view(1)])
    if exp[-1] < 5:
        obs, exp = obs[:-1], exp[:-1]
    stat = float(((obs - exp) ** 2 / exp).sum())
    dof = len(obs) - 1
    # Wilson-Hilferty: the chi-square tail through a normal approximation (dof >= 3 here).
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))


def test_rejection_sampling_keeps_the_target_distribution():
    """verify() on a fixed target and a deliberately different draft distribution: the first
    token it emits must follow the target, whatever the drafts."""
    g = torch.Generator().manual_seed(0)
    vocab = 12
    target_logits = torch.randn(3, vocab, generator=g) * 1.5
    draft_probs = torch.softmax(torch.randn(2, vocab, generator=g) * 1.5, dim=-1)
    sp = SamplingParams(temperature=1.0)
    counts = torch.zeros(vocab)
    accepted = 0
    for _ in range(20000):
        drafts = [int(torch.multinomial(draft_probs[i], 1, generator=g)) for i in range(2)]
        tokens, n = verify(target_logits, drafts, draft_probs, sp, g)
        counts[tokens[0]] += 1
        accepted += n
    assert 0 < accepted < 2 * 20000                       # both paths ran
    assert chi_square_p(counts, torch.softmax(target_logits[0], -1)) > 1e-3


def test_speculative_sampling_matches_the_model_distribution(ckpt):
    """End to end: the second generated token, over many seeded requests with nextn=2, follows
    sum_t1 p(t1 | prompt) p(t2 | prompt, t1) computed exactly from the target's logits."""
    prompt = "Ann has 3 coins.\n"
    sp_args = dict(temperature=1.0, top_k=6, max_tokens=3, ignore_eos=True)   # room for a draft after token 1
    llm = LLM(ckpt, mtp_nextn=2, device="cpu", max_num_seqs=256)
    ids = llm.tokenizer.encode(prompt)
    n = 3000
    outs = llm.generate([ids] * n, [SamplingParams(seed=i, **sp_args) for i in range(n)])
    seconds = torch.zeros(llm.model_config.vocab_size)
    for o in outs:
        seconds[o.outputs[0].token_ids[1]] += 1
    assert sum(o.spec.accepted for o in outs) > 0          # some drafts were accepted

    from trtx.engine.sampling import filtered_probs
    ref = LLM(ckpt, device="cpu")
    p1 = filtered_probs(ref.generate(ids + [0], SamplingParams(max_tokens=1, return_context_logits=True))[0]
                        .context_logits[-2], SamplingParams(**sp_args))
    firsts = [t for t in range(len(p1)) if p1[t] > 0]
    ctx = ref.generate([ids + [t, 0] for t in firsts], SamplingParams(max_tokens=1, return_context_logits=True))
    p2 = sum(p1[t] * filtered_probs(o.context_logits[-2], SamplingParams(**sp_args)) for t, o in zip(firsts, ctx))
    assert chi_square_p(seconds, p2) > 1e-3
