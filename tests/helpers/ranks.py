"""Helpers for tests that start real multi-rank jobs. Those jobs run through the harness's launcher
(trtx.cli), so only functional tests use this module, never the engine's unit tests."""
from pathlib import Path

JOBS = Path(__file__).resolve().parents[1] / "jobs"      # the programs these tests run on every rank


def eval_on_ranks(tmp_path, timeout_s: float, max_samples: int | None = None, **engine):
    """`trtx eval`'s multi-rank run (cli.eval.evaluate on tp x pp ranks) of the bundled tiny-arith
    eval set with these engine options, logs under tmp_path; pass or fail, the job must leave no
    process behind."""
    from trtx.cli.eval.evaluate import evaluate
    from trtx.cli.eval.models import MODELS_DIR
    from trtx.cli.launch.launcher import processes_of
    from trtx.engine.engine_config import EngineConfig
    model = MODELS_DIR / "tiny-arith"
    logs = (tmp_path / "logs").resolve()
    try:
        return evaluate(EngineConfig(model, **engine), model / "tasks" / "arith.yaml", max_samples,
                        timeout_s=timeout_s, log_dir=logs)
    finally:
        assert not processes_of(logs), "processes of the job were left running"
