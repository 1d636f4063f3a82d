"""Helpers for tests that start real multi-rank jobs."""
import psutil


def leftovers(log_dir):
    """Processes whose command line mentions this job's log folder (rank entries and their CMDs)."""
    found = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            if str(log_dir) in " ".join(p.info["cmdline"] or []) or \
                    (p.info["environ"] or {}).get("TRTX_RANK_LOG_DIR") == str(log_dir):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def eval_on_ranks(tmp_path, tp: int, pp: int, timeout_s: float, **options):
    """`trtx eval`'s multi-rank run (cli.eval.evaluate.evaluate_on_ranks) of the bundled tiny-arith
    eval set, logs under tmp_path; pass or fail, the job must leave no process behind."""
    from trtx.cli.eval.evaluate import evaluate_on_ranks
    from trtx.cli.eval.models import MODELS_DIR
    model = MODELS_DIR / "tiny-arith"
    logs = (tmp_path / "logs").resolve()
    try:
        return evaluate_on_ranks(model, model / "eval.jsonl", tp, pp, timeout_s, logs, **options)
    finally:
        assert not leftovers(logs), "processes of the job were left running"


PROMPTS = ["The quick brown fox jumps over the lazy dog.", "Ann has 3 coins; Tom has 14.", "x" * 40, "42+17=", "Hi"]


def prompts_of(model_dir, n: int) -> list[str]:
    """The first n prompts of the model's eval set, or fixed text for a checkpoint without one."""
    from pathlib import Path

    from trtx.cli.eval.evalset import load_problems
    path = Path(model_dir) / "eval.jsonl"
    return [p["prompt"] for p in load_problems(path, n)] if path.exists() else PROMPTS[:n]
