"""Helpers for tests that start real multi-rank jobs."""


def eval_on_ranks(tmp_path, timeout_s: float, max_samples: int | None = None, **engine):
    """`trtx eval`'s multi-rank run (cli.eval.evaluate_on_ranks) of the bundled tiny-arith eval set
    with these engine options, logs under tmp_path; pass or fail, the job must leave no process
    behind."""
    from trtx.cli.eval.evaluate import evaluate_on_ranks
    from trtx.cli.eval.models import MODELS_DIR
    from trtx.cli.launch.launcher import processes_of
    from trtx.engine.engine_config import EngineConfig
    model = MODELS_DIR / "tiny-arith"
    logs = (tmp_path / "logs").resolve()
    try:
        return evaluate_on_ranks(EngineConfig(model, **engine), model / "eval.jsonl", timeout_s, logs, max_samples)
    finally:
        assert not processes_of(logs), "processes of the job were left running"


PROMPTS = ["The quick brown fox jumps over the lazy dog.", "Ann has 3 coins; Tom has 14.", "x" * 40, "42+17=", "Hi"]


def prompts_of(model_dir, n: int) -> list[str]:
    """The first n prompts of the model's eval set, or fixed text for a checkpoint without one."""
    from pathlib import Path

    from trtx.cli.eval.evalset import load_problems
    path = Path(model_dir) / "eval.jsonl"
    return [p["prompt"] for p in load_problems(path, n)] if path.exists() else PROMPTS[:n]
