"""Log-likelihood scoring (LLM.score, SamplingParams.prompt_logprobs_from) against `transformers`:
each continuation token's log-probability within 1e-4 (fp32) and its greedy flag exactly, on
random checkpoints; contexts shared by several continuations are computed once (forked cache
blocks) and give the same scores as scored alone, in waves on a small cache; nothing stays held.
(Under tp, pp and attention DP: tests/functional/ranks/test_scoring.py.)"""
import pytest
import torch

from tests.helpers.checkpoints import load_reference, make_checkpoint, make_mtp_checkpoint, make_release_checkpoint
from trtx.engine import LLM, SamplingParams
from trtx.engine.kv_cache import BlockManager


def random_pairs(seed: int, context_lengths=(1, 4, 5, 9, 17, 30), continuation_lengths=(1, 3, 7), vocab=(3, 120)):
    """Every context with every continuation length: pairs sharing a context, of every length
    around the block size (4)."""
    g = torch.Generator().manual_seed(seed)
    contexts = [torch.randint(*vocab, (n,), generator=g).tolist() for n in context_lengths]
    return [(c, torch.randint(*vocab, (m,), generator=g).tolist()) for c in contexts for m in continuation_lengths]


def reference_scores(ref, pairs):
    """transformers' log-probabilities of each continuation token, and whether each is the argmax."""
    out = []
    for context, continuation in pairs:
        with torch.no_grad():
            logits = ref(torch.tensor([context + continuation])).logits[0].float()[len(context) - 1:-1]
        target = torch.tensor(continuation)
        out.append((torch.log_softmax(logits, -1).gather(-1, target[:, None])[:, 0],
                    (logits.argmax(-1) == target).tolist()))
    return out


def assert_scores_match(got, expected):
    for i, (score, (logprobs, greedy)) in enumerate(zip(got, expected)):
        assert len(score.logprobs) == len(logprobs), f"pair {i}"
        assert (torch.tensor(score.logprobs) - logprobs).abs().max().item() < 1e-4, f"pair {i}"
        assert score.greedy == greedy, f"pair {i}"


def assert_close(a, b):
    """Scores of the same pairs computed in other batches: equal but for float rounding."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (torch.tensor(x.logprobs) - torch.tensor(y.logprobs)).abs().max().item() < 1e-5
        assert x.greedy == y.greedy


def with_greedy_continuations(ref, pairs, n=5):
    """The pairs plus, for a few contexts, transformers' own greedy continuation: a continuation
    whose every token is greedy (random tokens almost never are)."""
    extra = []
    for context, _ in pairs[::3][:n]:
        tokens = list(context)
        for _ in range(4):          # argmax by hand: generate's processors may forbid eos
            with torch.no_grad():
                tokens.append(int(ref(torch.tensor([tokens])).logits[0, -1].argmax()))
        extra.append((context, tokens[len(context):]))
    return pairs + extra


VARIANTS = {"llama-gqa": dict(arch="llama"), "qwen2-qkv-bias": dict(arch="qwen2"),
            "mistral-sliding-window": dict(arch="mistral", sliding_window=6)}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_scores_match_transformers(tmp_path, variant):
    model = make_checkpoint(tmp_path, **VARIANTS[variant])
    ref = load_reference(model)
    pairs = with_greedy_continuations(ref, random_pairs(0))
    got = LLM(model, block_size=4, num_kv_blocks=96).score(pairs)
    expected = reference_scores(ref, pairs)
    assert_scores_match(got, expected)
    greedy_ones = got[-5:]
    assert all(s.is_greedy for s in greedy_ones) and not any(s.is_greedy for s in got[:-5] if len(s.greedy) > 2)
    assert got[0].logprob == pytest.approx(float(expected[0][0].sum()), abs=1e-4)


class CountTokens:
    """The prompt tokens each engine step computes, by spying on the scheduler's output."""

    def __init__(self, llm):
        self.total, schedule = 0, llm.engine.scheduler.schedule

        def spy():
            out = schedule()
            self.total += sum(out.num_tokens)
            return out
        llm.engine.scheduler.schedule = spy


def test_a_shared_context_is_computed_once(tmp_path):
    """Four continuations of a 30-token context (block size 4): the first computes all of its 31
    tokens and keeps the context's first 28 (7 whole blocks, the last context token recomputed);
    the other three compute 2 + their own. Same scores as each pair scored alone."""
    model = make_checkpoint(tmp_path)
    context = list(range(10, 40))
    pairs = [(context, [50 + i]) for i in range(4)]
    llm = LLM(model, block_size=4, num_kv_blocks=64)
    count = CountTokens(llm)
    shared = llm.score(pairs)
    assert count.total == 31 + 3 * (2 + 1)
    alone = [llm.score([p])[0] for p in pairs]
    assert_close(shared, alone)
    assert llm.engine.blocks.num_free == 63 and not llm.engine.blocks.tables


def test_a_small_cache_keeps_contexts_a_wave_at_a_time(tmp_path):
    """A cache of 16 blocks of 4 tokens, chunked prefill of 6 tokens: the shared contexts of 18
    pairs need 14 blocks kept, more than half the cache, so they are kept in two waves; the
    scores equal a roomy cache's and every block comes back."""
    model = make_checkpoint(tmp_path)
    pairs = random_pairs(1)
    roomy = LLM(model, block_size=4, num_kv_blocks=128).score(pairs)
    llm = LLM(model, block_size=4, num_kv_blocks=16, max_num_tokens=6)
    waves, release = [], llm.engine.release
    llm.engine.release = lambda ids: (waves.append(list(ids)), release(ids))
    assert_close(roomy, llm.score(pairs))
    assert len(waves) == 2 and all(waves)
    assert llm.engine.blocks.num_free == 15 and not llm.engine.blocks.tables


def test_kept_contexts_never_starve_a_long_pair(tmp_path):
    """10 usable blocks of 4 tokens: a context kept for its second continuation (4 blocks) must not
    share a wave with a pair that needs 9 blocks alone, or that pair could never be admitted."""
    model = make_checkpoint(tmp_path)
    context = list(range(10, 27))                                   # 17 tokens: 16 kept
    pairs = [(context, [50]), (context, [51]), (list(range(30, 61)), [52, 53, 54])]     # 34 tokens: 9 blocks
    roomy = LLM(model, block_size=4, num_kv_blocks=64).score(pairs)
    llm = LLM(model, block_size=4, num_kv_blocks=11)
    assert_close(roomy, llm.score(pairs))
    assert llm.engine.blocks.num_free == 10


def test_a_text_continuation_gets_no_special_tokens(tmp_path):
    """With a tokenizer that puts BOS first, a text continuation is scored without one."""
    llm = LLM(make_release_checkpoint(tmp_path), block_size=4, num_kv_blocks=64)
    text = llm.score([("Hi", " there")])[0]
    ids = llm.score([(llm.tokenizer.encode("Hi"), llm.tokenizer.encode(" there", add_special_tokens=False))])[0]
    assert len(text.logprobs) == len(" there") and text.logprobs == ids.logprobs
    assert llm.score([]) == []


def test_scores_with_mtp_equal_scores_without(tmp_path):
    """A model with an MTP module scores the same with speculation on: a scoring request samples
    one token and never drafts."""
    model = make_mtp_checkpoint(tmp_path)
    pairs = random_pairs(2, vocab=(3, 60))
    plain = LLM(model, block_size=4).score(pairs)
    llm = LLM(model, block_size=4, mtp_nextn=2)
    assert_close(llm.score(pairs), plain)
    assert llm.engine.runner.forwards["eager"] > 0


def test_generate_returns_prompt_logprobs_from_the_position_asked(tmp_path):
    model = make_checkpoint(tmp_path)
    ref = load_reference(model)
    prompt = list(range(20, 33))
    out = LLM(model, block_size=4, max_num_tokens=5).generate(prompt, SamplingParams(max_tokens=3, prompt_logprobs_from=6))[0]
    (logprobs, greedy), = reference_scores(ref, [(prompt[:6], prompt[6:])])
    assert len(out.prompt_logprobs) == 7 and len(out.outputs[0].token_ids) == 3
    assert (torch.tensor(out.prompt_logprobs) - logprobs).abs().max().item() < 1e-4
    assert out.prompt_greedy == greedy


def test_bad_scoring_requests_are_refused(tmp_path):
    llm = LLM(make_checkpoint(tmp_path), block_size=4)
    with pytest.raises(ValueError, match="pair 1: the context and the continuation each need at least one token"):
        llm.score([([5], [6]), ([], [7])])
    # Checked before any request starts: nothing is left queued or holding blocks.
    with pytest.raises(ValueError, match="pair 1: 512 tokens leave no room to generate"):
        llm.score([([5, 5], [6]), ([5] * 500, [6] * 12)])
    with pytest.raises(ValueError, match="pair 0: token id 999 outside the vocabulary"):
        llm.score([([5, 999], [6])])
    assert not llm.engine.has_unfinished() and not llm.engine.blocks.tables
    with pytest.raises(ValueError, match="prompt_logprobs_from 3 leaves nothing to score in a prompt of 3 tokens"):
        llm.generate([5, 6, 7], SamplingParams(prompt_logprobs_from=3))
    with pytest.raises(ValueError, match="prompt_logprobs_from must be >= 1"):
        SamplingParams(prompt_logprobs_from=0)


def test_forked_blocks_are_freed_with_their_last_table():
    blocks = BlockManager(8, 4)
    assert blocks.allocate(1, 12)                       # blocks 1, 2, 3
    blocks.fork(1, 2, 2)                                # shares 1, 2
    assert blocks.allocate(2, 16) and blocks.tables[2][:2] == blocks.tables[1][:2]
    blocks.truncate(1, 2)                               # block 3 goes back
    assert blocks.num_free == 8 - 1 - 3 - 2 + 1
    blocks.free(1)                                      # 1 and 2 still in request 2's table
    assert blocks.num_free == 3
    blocks.free(2)
    assert blocks.num_free == 7
    with pytest.raises(ValueError, match="cannot fork 3 blocks of request 2"):
        blocks.allocate(2, 8)
        blocks.fork(2, 3, 3)
