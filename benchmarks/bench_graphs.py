"""Tokens/s of decode graphs against eager forwards on the bundled model, one rank.

    python benchmarks/bench_graphs.py [--model tiny-arith] [--batch 1 8] [--nextn 0 2] [--prompts 16]

The first --prompts problems of the model's eval set, greedy, served --batch at a time. For each
(batch, nextn) an eager LLM and one with decode_graphs=True are loaded and warmed up; then they
take turns --repeat times and each keeps its best time. Prints tokens/s, graph/eager, the share
of forwards that replayed a graph, and whether the tokens are the same.

On a GPU this is where CUDA graphs should pay (a small model's decode step is launch-bound). On
CPU there is no graph API and a replay is an eager forward over padded static buffers (keys up to
the model length), so expect a ratio below 1 there: it measures the cost of padding alone.
"""
from __future__ import annotations

import argparse
import time

from trtx.cli.evaluate import default_dataset, load_problems, resolve_model
from trtx.engine import LLM, SamplingParams


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-arith")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--nextn", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    model_dir = resolve_model(args.model)
    prompts = [p["prompt"] for p in load_problems(default_dataset(model_dir), args.prompts)]
    sp = SamplingParams(max_tokens=96)

    print(f"{'device':>6} {'batch':>5} {'nextn':>5} {'eager tok/s':>11} {'graph tok/s':>11} {'graph/eager':>11} "
          f"{'replayed':>8}  same tokens")
    for batch in args.batch:
        for k in args.nextn:
            llms = {graphs: LLM(model_dir, mtp_nextn=k, max_num_seqs=batch, warmup=True, decode_graphs=graphs)
                    for graphs in (False, True)}
            best, outs = {g: float("inf") for g in llms}, {}
            for llm in llms.values():
                llm.generate(prompts[:batch], sp)
            forwards0 = dict(llms[True].engine.forwards)
            for _ in range(args.repeat):
                for g, llm in llms.items():
                    t0 = time.perf_counter()
                    outs[g] = llm.generate(prompts, sp)
                    best[g] = min(best[g], time.perf_counter() - t0)
            forwards = {kind: n - forwards0.get(kind, 0) for kind, n in llms[True].engine.forwards.items()}
            replayed = 1 - forwards.get("eager", 0) / sum(forwards.values())
            tokens = sum(len(o.outputs[0].token_ids) for o in outs[False])
            eager, graph = tokens / best[False], tokens / best[True]
            same = [o.outputs[0].token_ids for o in outs[True]] == [o.outputs[0].token_ids for o in outs[False]]
            print(f"{llms[True].device.type:>6} {batch:>5} {k:>5} {eager:>11.0f} {graph:>11.0f} {graph / eager:>10.2f}x "
                  f"{replayed:>8.0%}  {same}")


if __name__ == "__main__":
    main()
