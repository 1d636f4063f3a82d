"""Tokens/s of MTP speculative decoding on the bundled model, nextn 0..3, at batch 1 and 8.

    python benchmarks/bench_mtp.py [--model tiny-arith] [--batch 1 8] [--nextn 0 1 2 3] [--prompts 16]

The first --prompts problems of the model's eval set, greedy, served --batch at a time
(max_num_seqs = batch). Every configuration is loaded once and warmed up; then the configurations
take turns --repeat times and each keeps its best time, so a noisy neighbour hurts all alike. Also
checks that every nextn produced exactly nextn=0's tokens. Goal: nextn=2 at least 1.4x faster than
nextn=0 at batch 1.
"""
from __future__ import annotations

from trtx.engine import LLM
from trtx.engine.speculative import SpecStats
from turns import parse_args, take_turns


def main():
    args, model_dir, prompts = parse_args(__doc__, nextn=[0, 1, 2, 3])

    print(f"{'batch':>5} {'nextn':>5} {'tok/s':>8} {'speedup':>8} {'accept len':>10} {'accept rate':>11}  same tokens")
    for batch in args.batch:
        llms = {k: LLM(model_dir, mtp_nextn=k, max_num_seqs=batch) for k in args.nextn}
        best, outs = take_turns(llms, prompts, batch, args.repeat)
        tokens = sum(len(o.outputs[0].token_ids) for o in outs[args.nextn[0]])
        base = tokens / best[args.nextn[0]]
        for k in args.nextn:
            rate = tokens / best[k]
            stats = SpecStats.total(o.spec for o in outs[k])
            same = [o.outputs[0].token_ids for o in outs[k]] == [o.outputs[0].token_ids for o in outs[args.nextn[0]]]
            print(f"{batch:>5} {k:>5} {rate:>8.0f} {rate / base:>7.2f}x {stats.mean_acceptance_length:>10.2f} "
                  f"{stats.acceptance_rate:>11.3f}  {same}")


if __name__ == "__main__":
    main()
