"""What bench_mtp.py and bench_graphs.py share: their command line (the bundled model's eval
prompts, served --batch at a time) and the timing, in which every engine is warmed up and then
the engines take turns --repeat times, each keeping its best time, so that a noisy neighbour
hurts all alike."""
from __future__ import annotations

import argparse
import time

from trtx.cli.eval.models import default_prompts, resolve_model
from trtx.engine import SamplingParams

SAMPLING = SamplingParams(max_tokens=96)


def parse_args(doc: str, nextn: list[int]) -> tuple[argparse.Namespace, object, list[str]]:
    """(args, model directory, the first --prompts eval prompts)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-arith")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--nextn", type=int, nargs="+", default=nextn)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    model_dir = resolve_model(args.model)
    return args, model_dir, default_prompts(model_dir, args.prompts)


def take_turns(llms: dict, prompts: list[str], batch: int, repeat: int) -> tuple[dict, dict]:
    """Best seconds and last outputs of each LLM (by key) generating for every prompt."""
    best, outs = {key: float("inf") for key in llms}, {}
    for llm in llms.values():
        llm.generate(prompts[:batch], SAMPLING)                     # warmup
    for _ in range(repeat):
        for key, llm in llms.items():
            t0 = time.perf_counter()
            outs[key] = llm.generate(prompts, SAMPLING)
            best[key] = min(best[key], time.perf_counter() - t0)
    return best, outs
