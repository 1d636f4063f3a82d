"""What every rank of `trtx eval --tp N --pp M` runs (started by the launcher):

    python -m trtx.cli.eval.rank --model DIR --dataset FILE --tp N --pp M [--adp] --out DIR [...]

Each rank builds its share of the model and generates for the whole eval set with the others;
each writes OUT/rank-R.json (what it holds: layers, tensors, parameter bytes), and rank 0 writes
OUT/result.json (the EvalResult, samples included), which `trtx eval` reads back.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..fsutil import atomic_write
from .evaluate import evaluate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trtx.cli.eval.rank")
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    ap.add_argument("--adp", action="store_true")
    ap.add_argument("--warmup", action="store_true")
    ap.add_argument("--warmup-oom", choices=["skip", "stop"], default="skip")
    ap.add_argument("--graphs", action="store_true")
    ap.add_argument("--mtp-nextn", type=int, default=0)
    ap.add_argument("--max-samples", type=int)
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    result, llm = evaluate(args.model, args.dataset, mtp_nextn=args.mtp_nextn, max_samples=args.max_samples,
                           max_num_seqs=args.max_num_seqs, tp=args.tp, pp=args.pp, adp=args.adp,
                           warmup=args.warmup, warmup_oom=args.warmup_oom, graphs=args.graphs)
    info = result.ranks[0]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / f"rank-{info['rank']}.json", json.dumps(info, indent=1) + "\n")
    if info["rank"] == 0:
        data = result.as_dict(with_samples=True)
        data["ranks"] = []
        atomic_write(args.out / "result.json", json.dumps(data) + "\n")
    llm.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
