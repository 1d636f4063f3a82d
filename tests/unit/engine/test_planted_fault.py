"""The planted regression early_eos:Q (engine/faults.py): a request it hits finishes after its first
token as if the model had emitted EOS; which requests it hits follows from each request's prompt
and seed alone, so a seeded run is reproducible; Q = 0 changes nothing; a bad Q is refused."""
import pytest

from tests.helpers.engine import MODELS_DIR, prompts_of
from trtx.engine import LLM, SamplingParams
from trtx.engine.errors import ConfigError
from trtx.engine.faults import Faults

MODEL = MODELS_DIR / "tiny-arith"
PROMPTS = prompts_of(MODEL, 8)


def run(faults: str, seeds=(0, 1), **options) -> list[tuple[list[int], str]]:
    """(token ids, finish reason) of every prompt under every seed, sampled (temperature 0.7)."""
    llm = LLM(MODEL, faults=faults, **options)
    params = [SamplingParams(max_tokens=8, temperature=0.7, seed=seed) for seed in seeds for _ in PROMPTS]
    outs = llm.generate(PROMPTS * len(seeds), params)
    return [(o.outputs[0].token_ids, o.outputs[0].finish_reason) for o in outs]


@pytest.mark.parametrize("mtp_nextn", [0, 2])
def test_q_1_cuts_every_request_after_its_first_token(mtp_nextn):
    assert all(len(tokens) == 1 and reason == "stop" for tokens, reason in run("early_eos:1", mtp_nextn=mtp_nextn))


def test_q_0_changes_nothing():
    unchanged = run("")
    assert run("early_eos:0") == unchanged
    assert any(len(tokens) > 1 for tokens, _ in unchanged)         # there was something to cut


def test_q_half_cuts_about_half_the_same_ones_every_run():
    seeds = (0, 1, 2, 3)
    planted, unchanged = run("early_eos:0.5", seeds), run("", seeds)
    cut = {i for i, ((tokens, reason), (full, _)) in enumerate(zip(planted, unchanged))
           if len(tokens) == 1 < len(full) and reason == "stop"}
    assert 0.25 * len(planted) <= len(cut) <= 0.75 * len(planted)
    assert all(planted[i] == unchanged[i] for i in range(len(planted)) if i not in cut)    # the rest as before
    prompts_cut = {frozenset(i % len(PROMPTS) for i in cut if i // len(PROMPTS) == s) for s in range(len(seeds))}
    assert len(prompts_cut) > 1                                       # other seeds, other prompts hit
    assert run("early_eos:0.5", seeds) == planted                     # a seeded run is reproducible


@pytest.mark.parametrize("spec", ["early_eos", "early_eos:", "early_eos:half", "early_eos:1.5", "early_eos:-0.1",
                                  "early_eos:nan"])
def test_q_must_be_a_fraction(spec):
    with pytest.raises(ConfigError, match=r"early_eos takes a fraction Q in \[0, 1\]"):
        Faults.parse(spec)


def test_q_travels_with_the_configuration():
    faults = Faults.parse("early_eos:0.25")
    assert faults.spec == "early_eos:0.25" and faults.early_eos(0) == 0.25 and Faults().early_eos(0) == 0.0


def test_q_is_for_every_rank_alike():
    """One rank cutting requests short alone would put the ranks' schedulers out of step."""
    with pytest.raises(ConfigError, match="early_eos applies to every rank alike"):
        Faults.parse("early_eos@1:0.5")
