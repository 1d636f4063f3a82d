"""Tensor and pipeline parallelism on real CPU ranks (mpirun, gloo) with the bundled model: outputs
against a single rank, where the MTP weights live, what each rank holds, and the logits' difference
from one rank (float reduction order only). Every job runs through the launcher with a timeout, and
none may leave a process behind. (The rank layout without any process: tests/unit/engine/test_parallel.py.)"""
import json
import sys

import pytest
import torch
from safetensors import safe_open

from tests.helpers.checkpoints import make_checkpoint
from tests.helpers.engine import prompts_of
from tests.helpers.ranks import JOBS, eval_on_ranks
from trtx.cli.eval.engines import RankJobError
from trtx.cli.eval.evaluate import evaluate
from trtx.cli.eval.models import MODELS_DIR
from trtx.cli.launch.launcher import Launch, processes_of
from trtx.engine import LLM, SamplingParams
from trtx.engine.engine_config import EngineConfig

MODEL = MODELS_DIR / "tiny-arith"
TASK = MODEL / "tasks" / "arith.yaml"
SAMPLES = 48                                          # problems per multi-rank run
CONFIGS = {"tp2": (2, 1), "tp4": (4, 1), "pp2": (1, 2), "pp4": (1, 4), "tp2pp2": (2, 2)}
JOB_TIMEOUT_S = 240
pytestmark = [pytest.mark.timeout(600), pytest.mark.multirank]


def run_ranks(tmp_path, tp, pp, **options):
    return eval_on_ranks(tmp_path, JOB_TIMEOUT_S, SAMPLES, tensor_parallel_size=tp, pipeline_parallel_size=pp, **options)


@pytest.fixture(scope="module")
def single_rank():
    return {k: evaluate(EngineConfig(MODEL, mtp_nextn=k), TASK, SAMPLES) for k in (0, 1, 2)}


# Every configuration with and without MTP; nextn 1 too where MTP meets pipeline stages.
RUNS = [(c, k) for c in CONFIGS for k in (0, 2)] + [("pp2", 1), ("pp4", 1)]


@pytest.mark.parametrize("config,nextn", RUNS, ids=[f"{c}-mtp_nextn={k}" for c, k in RUNS])
def test_outputs_match_a_single_rank(tmp_path, single_rank, config, nextn):
    tp, pp = CONFIGS[config]
    ref, got = single_rank[nextn], run_ranks(tmp_path, tp, pp, mtp_nextn=nextn)
    differ = [i for i, (a, b) in enumerate(zip(ref.samples, got.samples)) if a["token_ids"] != b["token_ids"]]
    assert len(differ) <= SAMPLES // 100, f"{config}: outputs differ from one rank on problems {differ}"
    assert abs(got.accuracy - ref.accuracy) <= 100 * len(differ) / SAMPLES
    if nextn:
        assert abs(got.spec["acceptance_rate"] - ref.spec["acceptance_rate"]) <= 0.02
    assert [r.rank for r in got.ranks] == list(range(tp * pp))


def checkpoint_bytes(names):
    with safe_open(str(MODEL / "model.safetensors"), framework="pt") as f:
        return sum(f.get_tensor(n).nbytes for n in names)


@pytest.mark.parametrize("pp", [2, 4])
def test_mtp_weights_live_on_the_last_stage_only(tmp_path, pp):
    """Invariant 1: the MTP module (model.layers.4.*) is held by the last stage, which drafts, and
    by no other; each stage holds exactly its layers' tensors and no parameter beyond them."""
    got = run_ranks(tmp_path, 1, pp, mtp_nextn=2)
    mtp = "model.layers.4."
    for info in got.ranks:
        last = info.pp_rank == pp - 1
        held = {n for n in info.tensors if n.startswith(mtp)}
        assert info.mtp_module == last
        if last:
            assert held >= {mtp + t for t in ("enorm.weight", "hnorm.weight", "eh_proj.weight",
                                              "shared_head.norm.weight", "self_attn.q_proj.weight")}, \
                f"rank {info.rank} (last stage) lacks MTP weights: {sorted(held)}"
        else:
            assert not held, f"rank {info.rank} holds MTP weights it never uses: {sorted(held)}"
        layers = {int(n.split(".")[2]) for n in info.tensors if n.startswith("model.layers.")}
        assert layers == set(info.layers) | ({4} if last else set())
        assert info.parameter_bytes == checkpoint_bytes(info.tensors)


def test_dropped_mtp_weights_on_the_last_stage_stop_the_job_with_a_clear_error(tmp_path, monkeypatch):
    """The production bug behind invariant 1, switched on: the job must fail at once, naming the
    missing module, not hang in the drafter."""
    monkeypatch.setenv("TRTX_FAULTS", "drop_mtp_on_last_stage")
    with pytest.raises(RankJobError) as err:
        run_ranks(tmp_path, 1, 2, mtp_nextn=2)
    launch = err.value.launch
    assert launch.reason == "failed" and launch.first_failure == 1
    assert "the last pipeline stage holds no MTP module weights" in launch.ranks[1].traceback()


def context_logits_on_ranks(tmp_path, model, tp, pp):
    logs, out, prompts = (tmp_path / "logs").resolve(), tmp_path / "logits.pt", tmp_path / "prompts.json"
    prompts.write_text(json.dumps(prompts_of(model, 8)))             # the prompts context_logits(model) runs
    result = Launch(tp * pp, [sys.executable, str(JOBS / "logits_job.py"), str(model), str(tp), str(pp), str(out),
                              str(prompts)], JOB_TIMEOUT_S, logs).run()
    assert not processes_of(logs)
    assert result.exit_code == 0, result.summary()
    # Groups destroyed while the engine still held them kept gloo's threads alive into the
    # interpreter's exit, where one needing the GIL aborted its rank ("terminate called without
    # an active exception") now and then, after the work was done.
    for r in result.ranks:
        assert "backend threads after shutdown: none" in r.log_text(), f"rank {r.rank}: {r.log_text()[-300:]}"
    return torch.load(out)


def context_logits(model):
    outs = LLM(model).generate(prompts_of(model, 8), SamplingParams(max_tokens=1, return_context_logits=True))
    return [o.context_logits for o in outs]


@pytest.mark.parametrize("config", ["tp2", "tp4", "pp2"])
def test_logits_differ_from_one_rank_only_by_float_reduction_order(tmp_path, config):
    """Split matmuls summed by an all-reduce (or run in micro-batches) add the same products in
    another order: the logits move by float rounding, never by more, and the greedy choice is the
    same wherever the top two logits are further apart than that."""
    ref, got = context_logits(MODEL), context_logits_on_ranks(tmp_path, MODEL, *CONFIGS[config])
    worst = max((a - b).abs().max().item() for a, b in zip(ref, got))
    assert worst < 1e-4, f"{config}: logits differ by {worst}, more than reduction order explains"
    for a, b in zip(ref, got):
        top2 = a.topk(2).values
        clear = (top2[:, 0] - top2[:, 1]) > 2 * worst
        assert torch.equal(a.argmax(-1)[clear], b.argmax(-1)[clear])


@pytest.mark.parametrize("arch,overrides,tp", [("qwen2", {}, 2), ("llama", {"attention_bias": True, "mlp_bias": True}, 4)],
                         ids=["qwen2-qkv_bias-tp2", "llama-all_biases-tp4"])
def test_biases_are_split_and_added_once_under_tensor_parallelism(tmp_path, arch, overrides, tp):
    """Column-parallel biases are sliced with their rows; a row-parallel bias (o_proj, down_proj)
    is added by one rank only, or the all-reduce would count it tp times. tp4 on 2 KV heads also
    replicates each KV head on two ranks."""
    model = make_checkpoint(tmp_path / "ckpt", arch, **overrides)
    ref, got = context_logits(model), context_logits_on_ranks(tmp_path, model, tp, 1)
    assert max((a - b).abs().max().item() for a, b in zip(ref, got)) < 1e-4
