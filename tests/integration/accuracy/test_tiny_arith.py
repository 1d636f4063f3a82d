"""Accuracy and MTP acceptance of the bundled model's tasks on every engine configuration, each run
on real ranks through the launcher and gated against tests/integration/references/<task>.yaml
(cli/eval/gate.py): arith (generation, exact_match,last-answer) and arith-choice (multiple choice
by log-likelihood: acc, acc_norm, exact_match); and the regression tests of the four production
failures the engine's invariants guard against.

Test ids name the configuration: test_accuracy[pp4-mtp_nextn=2]. The task and every gated metric
(with threshold, n, acceptance) are recorded for `trtx report`; the full gate report is printed
pass or fail.
"""
import os
from pathlib import Path

import pytest

from trtx.cli.eval.evaluate import evaluate
from trtx.cli.eval.gate import gate_result, load_reference
from trtx.cli.eval.models import MODELS_DIR
from trtx.cli.eval.taskfile import load_task
from trtx.cli.launch.launcher import processes_of
from trtx.engine.engine_config import EngineConfig

MODEL = MODELS_DIR / "tiny-arith"
ARITH, CHOICE = (load_task(MODEL / "tasks" / f"{name}.yaml") for name in ("arith", "arith-choice"))
REFERENCES = Path(__file__).parents[1] / "references"
# Problems per run: the gate's threshold is computed for this n. TRTX_EVAL_SAMPLES=600 runs them all.
SAMPLES = int(os.environ.get("TRTX_EVAL_SAMPLES", "200"))
JOB_TIMEOUT_S = 600
LAYOUTS = {"single": (1, 1, False), "tp2": (2, 1, False), "tp4": (4, 1, False), "pp2": (1, 2, False),
           "pp4": (1, 4, False), "tp2pp2": (2, 2, False), "adp2": (2, 1, True), "adp4": (4, 1, True),
           "adp8": (8, 1, True), "tp2pp4": (2, 4, False), "tp4pp2": (4, 2, False)}
RUNS = ([("single", k) for k in (0, 1, 2, 3)]
        + [(c, k) for c in ("tp2", "tp4", "pp2", "tp2pp2", "adp2", "adp4") for k in (0, 2)]
        + [("pp4", k) for k in (0, 1, 2, 3)]
        + [(c, k) for c in ("adp8", "tp2pp4", "tp4pp2") for k in (0, 2)])     # 8 ranks


def spec(nextn: int) -> dict:
    return {"spec_dec_algo": "MTP", "mtp_nextn": nextn} if nextn else {}


def run(tmp_path, layout: str, nextn: int, task=ARITH, samples=SAMPLES, **options):
    """The task on the layout's ranks through the launcher; pass or fail, no process may be left."""
    tp, pp, attention_dp = LAYOUTS[layout]
    config = EngineConfig(MODEL, tensor_parallel_size=tp, pipeline_parallel_size=pp, attention_dp=attention_dp,
                          mtp_nextn=nextn, **options)
    logs = (tmp_path / "logs").resolve()
    try:
        return evaluate(config, task, samples, timeout_s=JOB_TIMEOUT_S, log_dir=logs)
    finally:
        assert not processes_of(logs), "processes of the job were left running"


def with_faults(monkeypatch, faults: str) -> None:
    """Add the load a regression test needs to whatever faults the caller switched on (so that
    TRTX_FAULTS=gather_when_finished still reaches the test that would catch it)."""
    monkeypatch.setenv("TRTX_FAULTS", ",".join(f for f in (os.environ.get("TRTX_FAULTS"), faults) if f))


def gate(result, nextn, record_property):
    """Every metric of the result's task that its reference gives, and MTP acceptance."""
    reference = load_reference(REFERENCES / f"{result.task}.yaml", "tiny-arith", spec(nextn), list(result.metrics))
    gates, report = gate_result(result, reference)
    record_property("task", result.task)
    for g in gates:
        for key, value in g.as_metrics().items():
            record_property(key, value)
    print(report)
    assert all(g.passed for g in gates), report


class TestTinyArith:
    @pytest.mark.parametrize("layout,nextn", RUNS, ids=[f"{c}-mtp_nextn={k}" for c, k in RUNS])
    def test_accuracy(self, tmp_path, record_property, layout, nextn):
        gate(run(tmp_path, layout, nextn), nextn, record_property)


class TestTinyArithChoice:
    """Multiple choice by log-likelihood (all 200 questions): the context's prefill shared by its
    four choices, scores gathered on the last pipeline stage, forks routed under attention DP."""

    @pytest.mark.parametrize("layout", ["single", "tp2", "pp2", "adp2"])
    def test_accuracy(self, tmp_path, record_property, layout):
        gate(run(tmp_path, layout, 0, CHOICE, samples=None), 0, record_property)


class TestLmEvalTask:
    """An lm-evaluation-harness task (arith_choice_lm, the bundled local lm-eval task over
    arith-choice's data, offline), run by `trtx eval --lm-eval`'s code through trtx's lm-eval model
    and gated like a task file, against references/arith_choice_lm.yaml (lm-eval's metric names)."""

    @pytest.mark.parametrize("layout", ["single", "tp2"])
    def test_accuracy(self, tmp_path, record_property, layout):
        pytest.importorskip("lm_eval")
        from trtx.cli.eval.lm_eval_task import evaluate_lm_eval
        tp, pp, attention_dp = LAYOUTS[layout]
        config = EngineConfig(MODEL, tensor_parallel_size=tp, pipeline_parallel_size=pp, attention_dp=attention_dp)
        logs = (tmp_path / "logs").resolve()
        try:
            result = evaluate_lm_eval(config, "arith_choice_lm", timeout_s=JOB_TIMEOUT_S, log_dir=logs)
        finally:
            assert not processes_of(logs), "processes of the job were left running"
        gate(result, 0, record_property)


class TestProductionRegressions:
    """One test per production failure, named for what it guards (DESIGN.md, invariants 1-4)."""

    def test_mtp_layers_kept_on_last_pp_stage_pp4(self, tmp_path, record_property):
        result = run(tmp_path, "pp4", 2)
        last = [r for r in result.ranks if r.pp_rank == 3]
        assert all(r.mtp_module for r in last) and not any(r.mtp_module for r in result.ranks if r not in last)
        gate(result, 2, record_property)

    def test_adp_dry_rank_with_all_rank_stats_joins_every_collective(self, tmp_path, record_property, monkeypatch):
        with_faults(monkeypatch, "idle_rank@1:30,all_rank_stats")
        monkeypatch.setenv("TRTX_CHECK_COLLECTIVES", "1")
        result = run(tmp_path, "adp4", 2, max_num_seqs=4)
        assert all(r.stats_from_ranks == [0, 1, 2, 3] for r in result.ranks)
        assert set(range(1, 31)) <= set(result.ranks[1].idle_iterations)
        gate(result, 2, record_property)

    def test_adp_ranks_agree_on_graph_or_eager_and_padded_size(self, tmp_path, record_property, monkeypatch):
        with_faults(monkeypatch, "idle_rank@1:30")
        monkeypatch.setenv("TRTX_CHECK_COLLECTIVES", "1")
        result = run(tmp_path, "adp4", 2, max_num_seqs=4, decode_graphs=True)
        forwards = [r.forwards for r in result.ranks]
        assert all(f == forwards[0] for f in forwards), forwards
        assert any(kind.startswith("graph-") for kind in forwards[0]), forwards[0]
        gate(result, 2, record_property)

    def test_capture_path_prepares_every_metadata_field(self, tmp_path, record_property):
        result = run(tmp_path, "tp2", 2, warmup=True)
        assert all(what == "ran" for r in result.ranks for _, what in r.warmup)
        gate(result, 2, record_property)

    def test_warmup_oom_on_one_rank_is_agreed_by_all(self, tmp_path, record_property, monkeypatch):
        with_faults(monkeypatch, "warmup_oom@2:decode-16")
        result = run(tmp_path, "tp2pp2", 0, warmup=True)
        for r in result.ranks:
            skipped = [name for name, what in r.warmup if what != "ran"]
            assert skipped == ["decode-16"], f"rank {r.rank} skipped {skipped}"
        gate(result, 0, record_property)

