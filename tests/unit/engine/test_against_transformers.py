"""The engine against `transformers` on small random checkpoints of every supported shape of model.

Context logits must agree to 1e-4 (fp32, max abs), and 32-token greedy generations must be
identical for a batch of prompts of different lengths that run together in one batch.
"""
import pytest
import torch

from tests.helpers.checkpoints import load_reference, make_checkpoint
from trtx.engine import LLM, SamplingParams

VARIANTS = {
    "llama-gqa": dict(arch="llama"),
    "llama-tied": dict(arch="llama", tie_word_embeddings=True),
    "llama-rope-llama3": dict(arch="llama", rope_theta=50000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}),
    "llama-head-dim": dict(arch="llama", head_dim=24),
    "llama-mha-bias": dict(arch="llama", num_key_value_heads=4, attention_bias=True, mlp_bias=True),
    "qwen2-qkv-bias": dict(arch="qwen2"),
    "mistral-sliding-window": dict(arch="mistral", sliding_window=16),
    "qwen2-window-from-layer-1": dict(arch="qwen2", use_sliding_window=True, sliding_window=12, max_window_layers=1),
}

PROMPTS = [
    [5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45, 49, 53, 57, 61, 65, 69, 73, 77, 81, 85, 89, 93],
    [3, 4],
    [100, 7, 64, 31, 8],
    list(range(10, 50)),
]


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request, tmp_path_factory):
    kwargs = dict(VARIANTS[request.param])
    model_dir = make_checkpoint(tmp_path_factory.mktemp(request.param), **kwargs)
    return request.param, model_dir, load_reference(model_dir)


def test_context_logits_match(variant):
    _, model_dir, ref = variant
    llm = LLM(model_dir, block_size=4, num_kv_blocks=128)
    outs = llm.generate(PROMPTS, SamplingParams(max_tokens=1, return_context_logits=True))
    for prompt, out in zip(PROMPTS, outs):
        with torch.no_grad():
            expected = ref(torch.tensor([prompt])).logits[0].float()
        assert out.context_logits.shape == expected.shape
        assert (out.context_logits - expected).abs().max().item() < 1e-4


def test_greedy_generation_matches_in_one_batch(variant):
    name, model_dir, ref = variant
    llm = LLM(model_dir, block_size=4, num_kv_blocks=128)
    steps_before = llm.engine.num_steps
    outs = llm.generate(PROMPTS, SamplingParams(max_tokens=32, ignore_eos=True))
    # All four prompts were prefilled in the first step and decoded side by side after it.
    assert llm.engine.num_steps - steps_before == 32
    for prompt, out in zip(PROMPTS, outs):
        with torch.no_grad():
            expected = ref.generate(torch.tensor([prompt]), max_new_tokens=32, min_new_tokens=32,
                                    do_sample=False, eos_token_id=None, pad_token_id=0)[0, len(prompt):]
        assert out.outputs[0].token_ids == expected.tolist(), name
        assert out.outputs[0].finish_reason == "length"


def test_chunked_prefill_gives_the_same_logits(variant):
    """A prompt split over several steps (token budget 7) sees exactly the keys it would at once."""
    _, model_dir, _ = variant
    whole = LLM(model_dir, block_size=4, num_kv_blocks=128)
    chunked = LLM(model_dir, block_size=4, num_kv_blocks=128, max_num_tokens=7)
    params = SamplingParams(max_tokens=8, return_context_logits=True, ignore_eos=True)
    for a, b in zip(whole.generate(PROMPTS, params), chunked.generate(PROMPTS, params)):
        assert (a.context_logits - b.context_logits).abs().max().item() < 1e-5
        assert a.outputs[0].token_ids == b.outputs[0].token_ids


def test_sharded_checkpoint_loads_like_a_single_file(tmp_path):
    single = make_checkpoint(tmp_path / "single", seed=3)
    sharded = make_checkpoint(tmp_path / "sharded", seed=3, max_shard_size="60KB")
    assert (sharded / "model.safetensors.index.json").exists()
    assert len(list(sharded.glob("*.safetensors"))) > 2
    params = SamplingParams(max_tokens=4, return_context_logits=True)
    a = LLM(single, num_kv_blocks=32).generate(PROMPTS[0], params)[0]
    b = LLM(sharded, num_kv_blocks=32).generate(PROMPTS[0], params)[0]
    assert torch.equal(a.context_logits, b.context_logits)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 0.1), (torch.float16, 0.02)])
def test_half_precision_close_to_reference(tmp_path, dtype, tol):
    model_dir = make_checkpoint(tmp_path / "half", dtype=dtype)
    ref = load_reference(model_dir, dtype=torch.float32)
    llm = LLM(model_dir, num_kv_blocks=32)
    assert llm.model_config.dtype == dtype                     # "auto" takes the checkpoint's torch_dtype
    assert next(llm.engine.runner.model.parameters()).dtype == dtype
    out = llm.generate(PROMPTS[0], SamplingParams(max_tokens=1, return_context_logits=True))[0]
    with torch.no_grad():
        expected = ref(torch.tensor([PROMPTS[0]])).logits[0]
    assert (out.context_logits - expected).abs().max().item() < tol
