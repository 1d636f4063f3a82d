"""Tokens/s of trtx's LLM.generate against transformers' generate on the same checkpoint.

    python benchmarks/bench_generate.py [--model DIR] [--batch 1 16] [--workload uniform mixed]

Workloads, both greedy with eos ignored, same prompts on both sides:
  uniform  `batch` prompts of --prompt-len tokens, --new-tokens each: one static batch, so the
           ratio measures per-step efficiency alone.
  mixed    4 x `batch` requests with prompt lengths in [8, 96] and max_tokens in [16, 128],
           served `batch` at a time: trtx with continuous batching (max_num_seqs = batch),
           transformers in static batches of `batch` (left-padded, run to the batch's longest
           max_tokens, as `generate` must). Only each request's own max_tokens count as output.

Without --model a random Llama checkpoint (GQA, 8 layers, hidden 512, 32M parameters) is written to
a temporary directory. One warmup run each; then the two engines alternate --repeat times and the
best time of each is kept, so a noisy neighbour on a shared machine hurts both alike.
"""
from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

CHECKPOINTS = Path(__file__).resolve().parents[1] / "tests" / "helpers" / "checkpoints.py"


def checkpoints():
    """tests/helpers/checkpoints.py (random checkpoints written by transformers), loaded by its path."""
    spec = importlib.util.spec_from_file_location("bench_checkpoints", CHECKPOINTS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module           # as an import would (dataclasses look it up there)
    spec.loader.exec_module(module)
    return module


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def workload(kind: str, batch: int, vocab: int, args) -> tuple[list[list[int]], list[int]]:
    rng = random.Random(batch * 1000 + len(kind))
    if kind == "uniform":
        return ([[rng.randrange(3, vocab) for _ in range(args.prompt_len)] for _ in range(batch)],
                [args.new_tokens] * batch)
    n = 4 * batch
    prompts = [[rng.randrange(3, vocab) for _ in range(rng.randint(8, 96))] for _ in range(n)]
    return prompts, [rng.randint(16, 128) for _ in range(n)]


def hf_generate(ref, prompts, max_tokens, batch):
    """Static batches of `batch` requests, left-padded, each run to its longest max_tokens."""
    outs = []
    for i in range(0, len(prompts), batch):
        group, limits = prompts[i:i + batch], max_tokens[i:i + batch]
        width = max(map(len, group))
        ids = torch.tensor([[0] * (width - len(p)) + p for p in group])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in group])
        with torch.inference_mode():
            gen = ref.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=max(limits),
                               min_new_tokens=max(limits), eos_token_id=None, pad_token_id=0)
        outs += [row[width:width + n].tolist() for row, n in zip(gen, limits)]
    return outs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="HF checkpoint directory (default: a random Llama)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--workload", nargs="+", choices=["uniform", "mixed"], default=["uniform", "mixed"])
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    helpers = checkpoints()
    load_reference, make_checkpoint = helpers.load_reference, helpers.make_checkpoint
    from trtx.engine import LLM, SamplingParams

    tmp = None
    model_dir = args.model
    if model_dir is None:
        tmp = tempfile.TemporaryDirectory()
        model_dir = make_checkpoint(Path(tmp.name), vocab_size=8192, hidden_size=512, intermediate_size=1408,
                                    num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
                                    max_position_embeddings=2048)
    ref = load_reference(model_dir)
    dtype = next(ref.parameters()).dtype
    n_params = sum(p.numel() for p in ref.parameters()) / 1e6
    print(f"model: {model_dir} ({n_params:.1f}M params, {dtype}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    llms = {b: LLM(model_dir, dtype=dtype, max_num_seqs=b, num_kv_blocks=b * 16 + 1) for b in args.batch}

    rows = []
    for kind in args.workload:
        for batch in args.batch:
            prompts, limits = workload(kind, batch, llms[batch].model_config.vocab_size, args)
            params = [SamplingParams(max_tokens=n, ignore_eos=True) for n in limits]

            def run_trtx():
                return [o.outputs[0].token_ids for o in llms[batch].generate(prompts, params)]

            def run_hf():
                return hf_generate(ref, prompts, limits, batch)

            ours, theirs = run_trtx(), run_hf()                   # warmup, and the outputs to compare
            same = sum(a == b for a, b in zip(ours, theirs))
            best_trtx = best_hf = float("inf")
            for _ in range(args.repeat):
                best_trtx = min(best_trtx, timed(run_trtx)[0])
                best_hf = min(best_hf, timed(run_hf)[0])
            tokens = sum(limits)
            rows.append((kind, batch, len(prompts), tokens / best_trtx, tokens / best_hf,
                         best_hf / best_trtx, f"{same}/{len(prompts)}"))

    print(f"{'workload':<8} {'batch':>5} {'requests':>8} {'trtx tok/s':>11} {'hf tok/s':>9} {'ratio':>7}  "
          "identical outputs")
    for kind, batch, n, a, b, r, same in rows:
        print(f"{kind:<8} {batch:>5} {n:>8} {a:>11.1f} {b:>9.1f} {r:>6.2f}x  {same}")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
