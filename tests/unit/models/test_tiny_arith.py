"""The bundled model, tiny-arith, as the harness relies on it: transformers reads it as a plain
LlamaForCausalLM with the engine's logits; its accuracy leaves the gate headroom (60-98); its MTP
module drafts well enough (acceptance >= 0.6 at nextn=1); and greedy speculation with nextn 1, 2
and 3 gives exactly the tokens of nextn 0 on the whole eval set."""
import pytest
import torch

from tests.helpers.engine import eval_rows, grade_last_answer
from trtx.cli.eval.models import MODELS_DIR
from trtx.engine import LLM, SamplingParams

MODEL = MODELS_DIR / "tiny-arith"
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def problems():
    return eval_rows(MODEL)


@pytest.fixture(scope="module")
def runs(problems):
    """Greedy outputs of the whole eval set for nextn 0..3."""
    prompts = [p["prompt"] for p in problems]
    return {k: LLM(MODEL, mtp_nextn=k, max_num_seqs=128, device="cpu").generate(prompts, SamplingParams(max_tokens=96))
            for k in range(4)}


def test_the_checkpoint_is_what_it_claims():
    import json

    from safetensors.torch import load_file
    cfg = json.loads((MODEL / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_nextn_predict_layers"] == 1
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]            # GQA
    assert 1e6 <= sum(t.numel() for t in load_file(str(MODEL / "model.safetensors")).values()) <= 10e6
    assert all((MODEL / name).exists() for name in ("tokenizer.json", "generation_config.json", "eval.jsonl"))


def test_transformers_loads_it_with_the_engines_logits(problems):
    transformers = pytest.importorskip("transformers")
    ref = transformers.LlamaForCausalLM.from_pretrained(MODEL, torch_dtype=torch.float32).eval()
    llm = LLM(MODEL, device="cpu")
    prompts = [p["prompt"] for p in problems[:4]]
    outs = llm.generate(prompts, SamplingParams(max_tokens=1, return_context_logits=True))
    for prompt, out in zip(prompts, outs):
        ids = torch.tensor([llm.tokenizer.encode(prompt)])
        with torch.no_grad():
            want = ref(ids).logits[0].float()
        torch.testing.assert_close(out.context_logits, want, atol=1e-4, rtol=1e-4)


def test_accuracy_leaves_the_gate_headroom(problems, runs):
    correct = sum(grade_last_answer(o.outputs[0].text, p["answer"]) for p, o in zip(problems, runs[0]))
    accuracy = 100 * correct / len(problems)
    assert len(problems) >= 500
    assert 60 <= accuracy <= 98, accuracy


def test_mtp_acceptance_at_nextn_1(runs):
    accepted = sum(o.spec.accepted for o in runs[1])
    proposed = sum(o.spec.proposed for o in runs[1])
    assert accepted / proposed >= 0.6, accepted / proposed


@pytest.mark.parametrize("nextn", [1, 2, 3])
def test_greedy_speculation_is_lossless_on_the_whole_eval_set(runs, nextn):
    want = [o.outputs[0].token_ids for o in runs[0]]
    got = [o.outputs[0].token_ids for o in runs[nextn]]
    mismatched = [i for i, (a, b) in enumerate(zip(want, got)) if a != b]
    assert not mismatched, f"{len(mismatched)} of {len(want)} outputs differ, first at problem {mismatched[0]}"
