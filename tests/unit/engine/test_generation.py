"""Continuous batching under memory pressure, scheduler caps, sampling, and stopping."""
import json

import pytest
import torch

from tests.helpers.checkpoints import make_checkpoint
from trtx.engine import LLM, SamplingParams
from trtx.engine.kv_cache import BlockManager
from trtx.engine.request import Request
from trtx.engine.sampling import filtered_probs
from trtx.engine.scheduler import Scheduler


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("model"), seed=1)


def _prompts(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 128, (int(torch.randint(4, 20, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def test_burst_larger_than_the_cache_completes_correctly(model_dir):
    prompts = _prompts(40)
    params = SamplingParams(max_tokens=24, ignore_eos=True)
    roomy = LLM(model_dir, num_kv_blocks=1024, block_size=4)
    expected = [o.outputs[0].token_ids for o in roomy.generate(prompts, params)]

    # 21 usable blocks of 4 tokens hold 84 tokens; the burst needs about 40 * 36 = 1440.
    tight = LLM(model_dir, num_kv_blocks=22, block_size=4, max_num_seqs=16)
    outs = tight.generate(prompts, params)
    assert [o.outputs[0].token_ids for o in outs] == expected
    assert tight.engine.scheduler.num_preemptions > 0      # decode growth really ran out of blocks
    assert tight.engine.blocks.num_free == 21               # every block came back


def test_request_larger_than_the_whole_cache_is_refused(model_dir):
    llm = LLM(model_dir, num_kv_blocks=5, block_size=4)
    with pytest.raises(ValueError, match="needs up to 26 tokens of KV cache .* the cache holds 16"):
        llm.generate([list(range(3, 13))], SamplingParams(max_tokens=16))


def test_generation_stops_at_the_model_length(tmp_path):
    model_dir = make_checkpoint(tmp_path / "short", max_position_embeddings=24)
    llm = LLM(model_dir, num_kv_blocks=32, block_size=4)
    out = llm.generate(list(range(3, 13)), SamplingParams(max_tokens=100, ignore_eos=True))[0].outputs[0]
    assert out.finish_reason == "length" and len(out.token_ids) == 24 - 10
    with pytest.raises(ValueError, match="prompt of 24 tokens leaves no room"):
        llm.generate(list(range(3, 27)), SamplingParams(max_tokens=1))


def test_scheduler_respects_request_and_token_caps():
    blocks = BlockManager(num_blocks=64, block_size=4)
    sched = Scheduler(blocks, max_num_seqs=2, max_num_tokens=10)
    for i in range(4):
        sched.add(Request(i, list(range(3, 10)), SamplingParams(max_tokens=4)))
    first = sched.schedule()
    # The first prompt (7 tokens) fits; the second gets the 3 tokens left of the budget (a chunk).
    assert [r.request_id for r in first.requests] == [0, 1] and first.num_tokens == [7, 3]
    for req, n in zip(first.requests, first.num_tokens):
        req.num_computed_tokens += n
    first.requests[0].output_token_ids.append(5)        # what the engine samples for a finished prompt
    second = sched.schedule()
    # Request 0 decodes its new token, request 1 finishes its prompt; budget is left, but
    # max_num_seqs keeps requests 2 and 3 waiting.
    assert [r.request_id for r in second.requests] == [0, 1] and second.num_tokens == [1, 4]
    assert [r.request_id for r in sched.waiting] == [2, 3]


def test_seeded_sampling_is_reproducible(model_dir):
    llm = LLM(model_dir, num_kv_blocks=64)
    prompt = _prompts(1)[0]
    a = llm.generate(prompt, SamplingParams(max_tokens=16, temperature=1.0, seed=7))[0].outputs[0].token_ids
    b = llm.generate(prompt, SamplingParams(max_tokens=16, temperature=1.0, seed=7))[0].outputs[0].token_ids
    c = llm.generate(prompt, SamplingParams(max_tokens=16, temperature=1.0, seed=8))[0].outputs[0].token_ids
    assert a == b and a != c


def test_top_k_1_is_greedy(model_dir):
    llm = LLM(model_dir, num_kv_blocks=64)
    prompts = _prompts(3, seed=4)
    greedy = llm.generate(prompts, SamplingParams(max_tokens=12, ignore_eos=True))
    top1 = llm.generate(prompts, SamplingParams(max_tokens=12, temperature=0.8, top_k=1, ignore_eos=True))
    assert [o.outputs[0].token_ids for o in greedy] == [o.outputs[0].token_ids for o in top1]


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    kept = filtered_probs(probs.log(), SamplingParams(temperature=1.0, top_p=0.7))
    assert torch.allclose(kept, torch.tensor([0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8]))
    kept = filtered_probs(probs.log(), SamplingParams(temperature=1.0, top_k=3))
    assert kept[0] == 0 and torch.allclose(kept.sum(), torch.tensor(1.0))


def test_sampled_tokens_follow_the_tempered_distribution(model_dir):
    """4000 first tokens sampled at T=0.7 / top-k 6 against the exact distribution (chi-square)."""
    llm = LLM(model_dir, num_kv_blocks=256, max_num_seqs=128)
    prompt = _prompts(1, seed=2)[0]
    params = SamplingParams(max_tokens=1, temperature=0.7, top_k=6, return_context_logits=True)
    ref = llm.generate(prompt, params)[0].context_logits[-1]
    expected = filtered_probs(ref, params)
    n = 4000
    outs = llm.generate([prompt] * n, [SamplingParams(max_tokens=1, temperature=0.7, top_k=6, seed=s)
                                       for s in range(n)])
    counts = torch.bincount(torch.tensor([o.outputs[0].token_ids[0] for o in outs]), minlength=128).double()
    support = expected > 0
    assert counts[~support].sum() == 0                     # nothing outside the top 6
    exp_counts = expected[support].double() * n
    chi2 = ((counts[support] - exp_counts) ** 2 / exp_counts).sum().item()
    assert chi2 < 20.5, chi2                              # df = 5, p = 0.001


def test_stop_string_truncates_text(model_dir):
    llm = LLM(model_dir, num_kv_blocks=64)
    full = llm.generate("Hello there", SamplingParams(max_tokens=24, ignore_eos=True))[0].outputs[0]
    stop = full.text[6:8]
    cut = full.text.find(stop)
    out = llm.generate("Hello there", SamplingParams(max_tokens=24, ignore_eos=True, stop=[stop]))[0].outputs[0]
    assert out.finish_reason == "stop"
    assert out.text == full.text[:cut]
    assert full.token_ids[:len(out.token_ids)] == out.token_ids


def test_text_prompt_equals_its_token_ids(model_dir):
    llm = LLM(model_dir, num_kv_blocks=64)
    ids = llm.tokenizer.encode("abc 123")
    a = llm.generate("abc 123", SamplingParams(max_tokens=8, ignore_eos=True))[0]
    b = llm.generate(ids, SamplingParams(max_tokens=8, ignore_eos=True))[0]
    assert a.prompt_token_ids == ids and a.outputs[0].token_ids == b.outputs[0].token_ids


def test_generation_stops_at_eos(model_dir, tmp_path):
    llm = LLM(model_dir, num_kv_blocks=64)
    prompt = _prompts(1, seed=5)[0]
    free_run = llm.generate(prompt, SamplingParams(max_tokens=20, ignore_eos=True))[0].outputs[0].token_ids
    eos = free_run[5]
    # The same weights with that token declared as eos in generation_config.json.
    (tmp_path / "m").mkdir()
    for f in model_dir.iterdir():
        (tmp_path / "m" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "m" / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    out = LLM(tmp_path / "m", num_kv_blocks=64).generate(prompt, SamplingParams(max_tokens=20))[0].outputs[0]
    first = free_run.index(eos)
    assert out.finish_reason == "stop" and out.token_ids == free_run[:first + 1]
