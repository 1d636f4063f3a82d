"""Tokens/s of decode graphs against eager forwards on the bundled model, one rank.

    python benchmarks/bench_graphs.py [--model tiny-arith] [--batch 1 8] [--nextn 0 2] [--prompts 16]

The first --prompts problems of the model's eval set, greedy, served --batch at a time. For each
(batch, nextn) an eager LLM and one with decode_graphs=True are loaded and warmed up; then they
take turns --repeat times and each keeps its best time (benchmarks/turns.py). Prints tokens/s,
graph/eager, the share of forwards that replayed a graph, and whether the tokens are the same.

On a GPU this is where CUDA graphs should pay (a small model's decode step is launch-bound). On
CPU there is no graph API and a replay is an eager forward over padded static buffers (rows of
null-block sequences; with MTP the drafter's catch-up padded to 1 + nextn positions), so expect a
ratio below 1 there: it measures the cost of padding alone. 'replayed' is the target's decode
forwards' share (the drafter's passes are counted apart, as mtp-graph-N / mtp-eager).
"""
from __future__ import annotations

from trtx.engine import LLM
from turns import parse_args, take_turns


def main():
    args, model_dir, prompts = parse_args(__doc__, nextn=[0, 2])

    print(f"{'device':>6} {'batch':>5} {'nextn':>5} {'eager tok/s':>11} {'graph tok/s':>11} {'graph/eager':>11} "
          f"{'replayed':>8}  same tokens")
    for batch in args.batch:
        for k in args.nextn:
            llms = {graphs: LLM(model_dir, mtp_nextn=k, max_num_seqs=batch, warmup=True, decode_graphs=graphs)
                    for graphs in (False, True)}
            best, outs = take_turns(llms, prompts, batch, args.repeat)
            forwards = llms[True].engine.runner.forwards                   # every generate's, warmup's included
            target = [n for kind, n in forwards.items() if not kind.startswith("mtp-")]
            replayed = 1 - forwards["eager"] / sum(target)
            tokens = sum(len(o.outputs[0].token_ids) for o in outs[False])
            eager, graph = tokens / best[False], tokens / best[True]
            same = [o.outputs[0].token_ids for o in outs[True]] == [o.outputs[0].token_ids for o in outs[False]]
            print(f"{llms[True].device.type:>6} {batch:>5} {k:>5} {eager:>11.0f} {graph:>11.0f} {graph / eager:>10.2f}x "
                  f"{replayed:>8.0%}  {same}")


if __name__ == "__main__":
    main()
