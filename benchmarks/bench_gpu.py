"""trtx on one GPU against transformers' generate and against the memory-bound limit (issue 16).

    python benchmarks/bench_gpu.py [--out FILE.json] [--bandwidth-gbs GBS] [--skip long ...]
    python benchmarks/bench_gpu.py --small          # tiny sizes: what `make bench-gpu` runs on CPU

The workload: issue 16's random "1.1B" Llama (hidden 2048, 16 layers, 16 query / 8 KV heads,
intermediate 5632, vocab 32000: 0.89B parameters as configured) in bf16, written to disk with the
project's checkpoint helper (tests/helpers/checkpoints.py); 64-token random prompts, greedy, eos
ignored, --new-tokens each.
Rows, each at batch 1, 16 and 64 (one static batch of that many prompts):

  transformers generate           the reference, on the same device
  trtx eager                      LLM(..., warmup=True)
  trtx graphs, max pos 4096       LLM(..., decode_graphs=True)
  trtx graphs, max pos 131072     the same weights with max_position_embeddings 131072: graphs must
                                  not get slower with the model's length (goal: within 10%)

Each cell runs once with --warm-tokens new tokens (first-use costs), then once timed. A cell whose
warm run says the timed run would take over --cell-seconds runs fewer new tokens (marked * and
recorded). Every trtx row is one LLM with max_num_seqs = the largest batch; its construction
(load, KV cache, warmup, graph capture) is measured with torch.cuda.memory_allocated/reserved, and
graph memory is the graphs row's growth minus the eager row's, next to the engine's own figure
(RankInfo.graph_memory: what each capture added to the graph pool).

The memory-bound limit of a decode step: every weight but the input embedding read once per step,
so tokens/s <= batch * bandwidth / weight bytes (KV cache reads ignored: a lower bound on time).
--bandwidth-gbs sets the bandwidth; by default 3350 GB/s on an H100 SXM (HBM3), 4800 on an H200;
another GPU needs the flag, and the limit column shows n/a without one (and on CPU).

Also: token agreement (an fp32 copy of a smaller random Llama generates greedy tokens identical to
transformers', eager and with graphs; bf16 top-1 agreement of the big model's prefill logits,
trtx's context logits against transformers' forward, as a fraction of positions), and the bundled
model (tiny-arith) at batch 1 with mtp_nextn 0-3, eager and with graphs: tok/s and acceptance.
The goals of issue 16 are printed beside the numbers they judge.

Without CUDA (or with --small) the sizes shrink (hidden 128, 2 layers, vocab 32000, batch 1 and 4,
16 new tokens, 2 bundled prompts) so the whole run takes well under two minutes on a CPU; the table
has the same shape. Progress lines are printed (flushed) as each measurement ends and --out is
rewritten after each, so a run cut short by a timeout keeps what it measured; SIGTERM still prints
the table of what was measured.
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench_generate import checkpoints     # tests/helpers/checkpoints.py, loaded by its path


# The benchmark model of each size (Llama; head_dim = hidden / heads; untied lm_head).
MODELS = {
    "full": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=16,
                 num_key_value_heads=8, vocab_size=32000),
    "small": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=32000),
}
# The fp32 agreement model: smaller than the benchmark model, to keep time down.
FP32_MODELS = {
    "full": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=4, vocab_size=32000),
    "small": MODELS["small"],
}
# Defaults of the options that depend on the size (None in argparse: filled in from here).
DEFAULTS = {
    "full": dict(batch=[1, 16, 64], new_tokens=128, warm_tokens=16, cell_seconds=40.0, kv_cache_mib=4096,
                 bundled_prompts=16, agree_batch=8, agree_new_tokens=64),
    "small": dict(batch=[1, 4], new_tokens=16, warm_tokens=4, cell_seconds=20.0, kv_cache_mib=64,
                  bundled_prompts=2, agree_batch=4, agree_new_tokens=16),
}
ROWS = {                                     # key: label
    "hf": "transformers generate",
    "eager": "trtx eager",
    "graphs": "trtx graphs, max pos {short}",
    "long": "trtx graphs, max pos {long}",
}
BANDWIDTH_GBS = [("H200", 4800.0), ("H100 80GB HBM3", 3350.0), ("H100 SXM", 3350.0)]   # name contains -> GB/s
SKIPPABLE = ["hf", "eager", "graphs", "long", "bf16-agreement", "fp32-agreement", "bundled"]


# -- results: printed as they come, written to --out after every measurement -------------------------

class Results:
    def __init__(self, out: Path | None):
        self.out, self.t0 = out, time.perf_counter()
        self.data: dict = {"meta": {}, "model": {}, "cells": {key: {} for key in ROWS}, "limit": {},
                           "memory": {}, "agreement": {}, "bundled": [], "goals": [], "errors": []}

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}", flush=True)

    def error(self, what: str, e: BaseException) -> None:
        text = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:400]
        self.data["errors"].append({"what": what, "error": text})
        self.log(f"{what}: FAILED {text}")
        self.save()

    def save(self) -> None:
        if self.out is None:
            return
        self.data["meta"]["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        tmp.replace(self.out)


# -- the model and the device -------------------------------------------------------------------------

def build_checkpoint(root: Path, sizes: dict, dtype: torch.dtype, max_pos: int) -> Path:
    """A random Llama of `sizes` in `dtype` written by the project's helper (reused when `root`
    already holds one of the same config, e.g. from an earlier run with the same --workdir)."""
    model_dir = root / f"llama-{sizes['hidden_size']}x{sizes['num_hidden_layers']}-{str(dtype).removeprefix('torch.')}"
    want = {**sizes, "max_position_embeddings": max_pos}
    config = model_dir / "config.json"
    if config.exists() and all(json.loads(config.read_text()).get(k) == v for k, v in want.items()) \
            and any(model_dir.glob("*.safetensors")) and (model_dir / "tokenizer.json").exists():
        return model_dir
    return checkpoints().make_checkpoint(model_dir, dtype=dtype, **want)


def with_max_pos(model_dir: Path, max_pos: int) -> Path:
    """The same weights (linked, not copied) under a config.json with another max_position_embeddings."""
    other = model_dir.with_name(f"{model_dir.name}-maxpos{max_pos}")
    other.mkdir(exist_ok=True)
    for f in model_dir.iterdir():
        link = other / f.name
        if f.name != "config.json" and not link.exists():
            link.symlink_to(f.resolve())
    config = json.loads((model_dir / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "max_position_embeddings": max_pos}, indent=2))
    return other


def weight_bytes(config: dict, elem: int) -> tuple[int, int]:
    """(parameters, bytes a decode step reads: every weight but the input embedding, which is a
    lookup; with tied embeddings the lm_head reads that one matrix)."""
    h, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or h // heads
    layer = h * heads * head_dim * 2 + 2 * h * kv_heads * head_dim + 3 * h * inter + 2 * h
    body = config["num_hidden_layers"] * layer + h + vocab * h          # layers, final norm, lm_head
    params = body + (0 if config.get("tie_word_embeddings") else vocab * h)
    return params, body * elem


def bandwidth(args, device: torch.device) -> tuple[float | None, str]:
    """(GB/s or None, where it came from)."""
    if args.bandwidth_gbs:
        return args.bandwidth_gbs, "--bandwidth-gbs"
    if device.type != "cuda":
        return None, "n/a on CPU (pass --bandwidth-gbs for a limit)"
    name = torch.cuda.get_device_name(device)
    for part, gbs in BANDWIDTH_GBS:
        if part in name:
            return gbs, f"default for {name}; --bandwidth-gbs to change"
    return None, f"unknown for {name}: pass --bandwidth-gbs for the limit column"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_memory(device: torch.device) -> tuple[int, int] | None:
    """(allocated, reserved) bytes, after freeing what is garbage; None on CPU."""
    if device.type != "cuda":
        return None
    gc.collect()
    sync(device)
    return torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def make_prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(length)] for _ in range(n)]


# -- timing ---------------------------------------------------------------------------------------------

def hf_generate(ref, prompts: list[list[int]], new_tokens: int, device: torch.device) -> list[list[int]]:
    """transformers' generate on one static batch of equal-length prompts, greedy, exactly
    new_tokens each (the reference's eos is unset, as trtx ignores it)."""
    ids = torch.tensor(prompts, device=device)
    with torch.inference_mode():
        out = ref.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                           eos_token_id=None, pad_token_id=0)
    return out[:, ids.shape[1]:].tolist()


def trtx_generate(llm, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    from trtx.engine import SamplingParams
    outs = llm.generate(prompts, SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True))
    return [o.outputs[0].token_ids for o in outs]


def measure_cell(generate, prompts, args, device) -> dict:
    """One warm run of --warm-tokens, then --repeat timed runs of --new-tokens, the best kept (fewer
    tokens when the warm run says they would take over --cell-seconds). `generate(prompts, n)` ->
    token lists."""
    sync(device)
    t0 = time.perf_counter()
    generate(prompts, args.warm_tokens)
    sync(device)
    per_token = (time.perf_counter() - t0) / args.warm_tokens            # prefill included: an upper bound
    n = args.new_tokens
    if per_token * n * args.repeat > args.cell_seconds:
        n = max(args.warm_tokens, int(args.cell_seconds / args.repeat / per_token))
    seconds = float("inf")
    for _ in range(args.repeat):
        sync(device)
        t0 = time.perf_counter()
        tokens = generate(prompts, n)
        sync(device)
        seconds = min(seconds, time.perf_counter() - t0)
    if any(len(t) != n for t in tokens):
        raise RuntimeError(f"asked for {n} new tokens, got {sorted({len(t) for t in tokens})}")
    return {"tok_s": len(prompts) * n / seconds, "seconds": seconds, "new_tokens": n,
            "reduced": n < args.new_tokens, "tokens": tokens}


def identical(ours: list[list[int]], theirs: list[list[int]]) -> str:
    """'k/n' sequences equal over the tokens both have."""
    same = sum(a[:min(len(a), len(b))] == b[:min(len(a), len(b))] for a, b in zip(ours, theirs))
    return f"{same}/{len(ours)}"


def build_llm(model_dir: Path, args, device: torch.device, **options):
    """(LLM, its construction's memory growth) with the benchmark's common options."""
    from trtx.engine import LLM
    free(device)
    before = cuda_memory(device)
    t0 = time.perf_counter()
    llm = LLM(model_dir, dtype=args.dtype_name, device=str(device), kv_cache_memory=args.kv_cache_mib << 20,
              warmup=True, **options)
    info = {"build_s": time.perf_counter() - t0}
    after = cuda_memory(device)
    if before is not None:
        info.update(allocated=after[0] - before[0], reserved=after[1] - before[1])
    return llm, info


def run_row(key: str, model_dir: Path, prompts: dict, res: Results, args, device, ref_tokens: dict,
            on_llm=None) -> None:
    """One trtx row: an LLM with max_num_seqs = the largest batch, every batch measured on it. An
    LLM that cannot be built (out of memory capturing the largest graph, say) is retried with one
    LLM per batch, max_num_seqs = that batch, so the smaller batches still get their numbers."""
    label = ROWS[key].format(short=args.max_pos, long=args.long_max_pos)
    llm = row_llm(key, label, key, model_dir, max(args.batch), res, args, device)
    groups = [(args.batch, llm)] if llm is not None else [([b], None) for b in args.batch]
    for batches, llm in groups:
        if llm is None:
            llm = row_llm(key, f"{label} (max_num_seqs {batches[0]})", f"{key}@{batches[0]}", model_dir, batches[0],
                          res, args, device)
            if llm is None:
                continue
        for batch in batches:
            before = dict(llm.rank_info().forwards)
            try:
                cell = measure_cell(lambda p, n: trtx_generate(llm, p, n), prompts[batch], args, device)
            except Exception as e:
                res.error(f"{label} batch {batch}", e)
                free(device)
                continue
            if key != "eager":
                forwards = {k: v - before.get(k, 0) for k, v in llm.rank_info().forwards.items()}
                total = sum(n for kind, n in forwards.items() if not kind.startswith("mtp-"))   # the target's
                cell["replayed"] = 1 - forwards.get("eager", 0) / total if total else 0.0
            tokens = cell.pop("tokens")
            for other in ("hf", "eager"):
                theirs = ref_tokens.get((other, batch))
                if theirs is not None and other != key:
                    cell[f"same_as_{other}"] = identical(tokens, theirs)
            ref_tokens[(key, batch)] = tokens
            finish_cell(key, batch, cell, res)
        if on_llm is not None:
            on_llm(llm)
            on_llm = None
        llm = None
        free(device)


def row_llm(key: str, label: str, memory_key: str, model_dir: Path, max_num_seqs: int, res: Results, args, device):
    """A row's LLM (None when it cannot be built), its construction's memory recorded under memory_key."""
    try:
        llm, mem = build_llm(model_dir, args, device, max_num_seqs=max_num_seqs, decode_graphs=key != "eager")
    except Exception as e:
        res.error(f"{label}: LLM construction", e)
        free(device)
        return None
    info = llm.rank_info()
    mem.update(max_num_seqs=max_num_seqs, engine_graph_memory=info.graph_memory, graphs=info.graphs,
               warmup=[list(w) for w in llm.warmup_report])
    res.data["memory"][memory_key] = mem
    skipped = [w for w in mem["warmup"] if w[1] != "ran"]
    res.log(f"{label}: built in {mem['build_s']:.1f}s" + (
        f", +{mem['allocated'] / 2**20:.0f} MiB allocated, +{mem['reserved'] / 2**20:.0f} MiB reserved"
        if "allocated" in mem else "") + (f", graphs {mem['graphs']}" if mem["graphs"] else "")
        + "".join(f"; warmup {name} {why}" for name, why in skipped))
    res.save()
    return llm


def finish_cell(key: str, batch: int, cell: dict, res: Results) -> None:
    limit = res.data["limit"].get(str(batch))
    hf = res.data["cells"]["hf"].get(str(batch))
    if hf and key != "hf":
        cell["vs_hf"] = cell["tok_s"] / hf["tok_s"]
    if limit:
        cell["of_limit"] = cell["tok_s"] / limit
    res.data["cells"][key][str(batch)] = cell
    extra = "".join(f", {k} {cell[k]}" for k in ("same_as_hf", "same_as_eager") if k in cell)
    replayed = f", {cell['replayed']:.0%} replayed" if "replayed" in cell else ""
    res.log(f"{ROWS[key].format(short=res.data['meta']['max_pos'], long=res.data['meta']['long_max_pos'])} "
            f"batch {batch}: {cell['tok_s']:.0f} tok/s ({cell['new_tokens']} new tokens in {cell['seconds']:.2f}s"
            f"{replayed}{extra})")
    res.save()


# -- agreement ------------------------------------------------------------------------------------------

def bf16_agreement(llm, ref, prompts: list[list[int]], device) -> dict:
    """Top-1 agreement of trtx's prefill (context) logits with transformers' forward, over every
    prompt position."""
    from trtx.engine import SamplingParams
    outs = llm.generate(prompts, SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True,
                                                return_context_logits=True))
    with torch.inference_mode():
        theirs = ref(torch.tensor(prompts, device=device)).logits.float().cpu()
    agree = positions = 0
    max_diff = 0.0
    for o, t in zip(outs, theirs):
        mine = o.context_logits.float()
        agree += int((mine.argmax(-1) == t.argmax(-1)).sum())
        positions += t.shape[0]
        max_diff = max(max_diff, float((mine - t).abs().max()))
    return {"agree": agree, "positions": positions, "fraction": agree / positions, "max_abs_diff": max_diff}


def fp32_agreement(root: Path, args, device) -> dict:
    """Greedy tokens of trtx (eager and with graphs) against transformers' generate, fp32."""
    sizes = FP32_MODELS["small" if args.small else "full"]
    model_dir = build_checkpoint(root, sizes, torch.float32, args.max_pos)
    ref = checkpoints().load_reference(model_dir, torch.float32).to(device)
    ref.generation_config.eos_token_id = None
    prompts = make_prompts(args.agree_batch, args.prompt_len, sizes["vocab_size"], seed=7)
    theirs = hf_generate(ref, prompts, args.agree_new_tokens, device)
    del ref
    out = {"model": sizes, "sequences": len(prompts), "new_tokens": args.agree_new_tokens}
    from trtx.engine import LLM
    for graphs in (False, True):
        llm = LLM(model_dir, dtype="float32", device=str(device), max_num_seqs=len(prompts),
                  kv_cache_memory=args.kv_cache_mib << 20, decode_graphs=graphs)
        ours = trtx_generate(llm, prompts, args.agree_new_tokens)
        out["graphs" if graphs else "eager"] = identical(ours, theirs)
        out[("graphs" if graphs else "eager") + "_first_difference"] = min(
            (next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), len(x)) for x, y in zip(ours, theirs)),
            default=0)
        del llm
        free(device)
    return out


# -- the bundled model --------------------------------------------------------------------------------

def bundled_sweep(args, device, res: Results) -> None:
    """The bundled model at batch 1: mtp_nextn in --nextn, eager and with graphs, over the first
    --bundled-prompts eval prompts (96 new tokens at most, as bench_mtp.py). Every configuration
    is loaded and warmed up, then they take turns --repeat times, each keeping its best time (so a
    noisy neighbour hurts all alike); tokens checked equal to eager nextn 0's."""
    from trtx.cli.eval.models import default_prompts, resolve_model
    from trtx.engine import LLM, SamplingParams
    from trtx.engine.speculative import SpecStats

    model_dir = resolve_model(args.bundled_model)
    prompts = default_prompts(model_dir, args.bundled_prompts)
    sampling = SamplingParams(max_tokens=96, temperature=0.0)
    llms, best, outs = {}, {}, {}
    for graphs in (False, True):
        for k in args.nextn:
            try:
                llms[k, graphs] = llm = LLM(model_dir, mtp_nextn=k, max_num_seqs=1, device=str(device), warmup=True,
                                            decode_graphs=graphs)
                llm.generate(prompts[:1], SamplingParams(max_tokens=args.warm_tokens, temperature=0.0))   # warm
            except Exception as e:
                res.error(f"{args.bundled_model} nextn {k} {'graphs' if graphs else 'eager'}", e)
                llms.pop((k, graphs), None)
    for _ in range(args.repeat):
        for key, llm in list(llms.items()):
            try:
                sync(device)
                t0 = time.perf_counter()
                outs[key] = llm.generate(prompts, sampling)
                sync(device)
                best[key] = min(best.get(key, float("inf")), time.perf_counter() - t0)
            except Exception as e:
                res.error(f"{args.bundled_model} nextn {key[0]} {'graphs' if key[1] else 'eager'}", e)
                del llms[key]
    base = outs.get((args.nextn[0], False))
    for (k, graphs), seconds in best.items():
        tokens = [o.outputs[0].token_ids for o in outs[k, graphs]]
        stats = SpecStats.total(o.spec for o in outs[k, graphs])
        entry = {"nextn": k, "graphs": graphs, "tok_s": sum(map(len, tokens)) / seconds, "seconds": seconds,
                 "tokens": sum(map(len, tokens)), "prompts": len(prompts),
                 "acceptance_rate": stats.acceptance_rate if k else None,
                 "mean_acceptance_length": stats.mean_acceptance_length if k else None,
                 "same_tokens_as_eager_nextn0": None if base is None else
                 tokens == [o.outputs[0].token_ids for o in base]}
        res.data["bundled"].append(entry)
        accept = f", acceptance {entry['acceptance_rate']:.3f}, length {entry['mean_acceptance_length']:.2f}" \
            if k else ""
        res.log(f"{args.bundled_model} nextn {k} {'graphs' if graphs else 'eager'}: {entry['tok_s']:.0f} tok/s "
                f"({entry['tokens']} tokens in {seconds:.2f}s{accept}, same tokens "
                f"{entry['same_tokens_as_eager_nextn0']})")
    res.save()
    llms.clear()
    free(device)


# -- the report -------------------------------------------------------------------------------------

def fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def print_table(res: Results, args) -> None:
    d, batches = res.data, args.batch
    meta = d["meta"]
    print(f"\ntokens/s: {meta['dtype']}, {args.prompt_len}-token prompts, {args.new_tokens} new tokens "
          f"(* fewer), greedy, one static batch; 'vs hf': / transformers; 'limit': share of the "
          f"memory-bound limit")
    head = f"{'':<30}" + "".join(f" | {f'batch {b}':^25}" for b in batches)
    sub = f"{'':<30}" + " | {:>9} {:>6} {:>8}".format("tok/s", "vs hf", "limit") * len(batches)
    print(head)
    print(sub)
    limit_row = f"{'memory-bound limit':<30}" + "".join(
        " | {:>9} {:>6} {:>8}".format(fmt(d["limit"].get(str(b)), ".0f", "n/a"), "", "") for b in batches)
    print(limit_row)
    for key, label in ROWS.items():
        line = f"{label.format(short=args.max_pos, long=args.long_max_pos):<30}"
        for b in batches:
            c = d["cells"][key].get(str(b))
            if c is None:
                line += " | {:>9} {:>6} {:>8}".format("-", "", "")
                continue
            tok = f"{c['tok_s']:.0f}" + ("*" if c["reduced"] else "")
            line += " | {:>9} {:>6} {:>8}".format(
                tok, fmt(c.get("vs_hf"), ".2f", "") + ("x" if "vs_hf" in c else ""),
                fmt(c.get("of_limit"), ".1%", "n/a" if not d["limit"] else "-"))
        print(line)
    reduced = sorted({f"{ROWS[k].format(short=args.max_pos, long=args.long_max_pos)} batch {b}: {c['new_tokens']}"
                      for k, row in d["cells"].items() for b, c in row.items() if c["reduced"]})
    if reduced:
        print("* new tokens run (--cell-seconds):", "; ".join(reduced))

    mem = d["memory"]
    if mem:
        parts = []
        for key in ("graphs", "long"):
            if key in mem and "eager" in mem and "reserved" in mem[key]:
                parts.append(f"{ROWS[key].format(short=args.max_pos, long=args.long_max_pos)}: "
                             f"+{(mem[key]['reserved'] - mem['eager']['reserved']) / 2**20:.0f} MiB reserved, "
                             f"+{(mem[key]['allocated'] - mem['eager']['allocated']) / 2**20:.0f} MiB allocated "
                             f"over eager")
        figures = [f"max pos {args.max_pos if k == 'graphs' else args.long_max_pos}: "
                   + ", ".join(f"{'batch ' + n if n.isdigit() else n} {b / 2**20:.0f} MiB" for n, b in mem[k]["engine_graph_memory"].items())
                   for k in ("graphs", "long") if mem.get(k, {}).get("engine_graph_memory")]
        engine = "; ".join(figures) or "n/a"
        print(f"graph memory: {'; '.join(parts) or 'n/a (CUDA only)'}; the engine's own figure: {engine}")

    agree = d["agreement"]
    if "fp32" in agree:
        a = agree["fp32"]
        print(f"fp32 greedy tokens identical to transformers ({a['sequences']} x {a['new_tokens']} tokens, hidden "
              f"{a['model']['hidden_size']}, {a['model']['num_hidden_layers']} layers): eager {a['eager']}, "
              f"graphs {a['graphs']}")
    if "bf16_prefill" in agree:
        a = agree["bf16_prefill"]
        print(f"bf16 prefill top-1 agreement with transformers: {a['fraction']:.3f} ({a['agree']}/{a['positions']} "
              f"positions; max |logit diff| {a['max_abs_diff']:.3f})")

    if d["bundled"]:
        print(f"\nbundled {args.bundled_model}, batch 1, {args.bundled_prompts} eval prompts (up to 96 new tokens)")
        print(f"{'nextn':>5} {'eager tok/s':>11} {'graphs tok/s':>12} {'graphs vs nextn 0':>17} {'accept len':>10} "
              f"{'accept rate':>11}  same tokens")
        by = {(e["nextn"], e["graphs"]): e for e in d["bundled"]}
        base = by.get((0, True))
        for k in args.nextn:
            e, g = by.get((k, False)), by.get((k, True))
            some = g or e
            if some is None:
                continue
            same = all(x["same_tokens_as_eager_nextn0"] is not False for x in (e, g) if x)
            print(f"{k:>5} {fmt(e and e['tok_s'], '.0f'):>11} {fmt(g and g['tok_s'], '.0f'):>12} "
                  f"{fmt(g and base and g['tok_s'] / base['tok_s'], '.2f'):>16}x "
                  f"{fmt(some['mean_acceptance_length'], '.2f'):>10} {fmt(some['acceptance_rate'], '.3f'):>11}  {same}")
    if d["errors"]:
        print("\nerrors:")
        for err in d["errors"]:
            print(f"  {err['what']}: {err['error']}")


def goals(res: Results, args) -> list[dict]:
    """Issue 16's goals, each with the number that judges it (None: not measured)."""
    cells, out = res.data["cells"], []

    def tok(key, batch):
        c = cells[key].get(str(batch))
        return c["tok_s"] if c else None

    def ratios(num_key, den_key):
        pairs = [(tok(num_key, b), tok(den_key, b)) for b in args.batch]
        return [a / b for a, b in pairs if a and b] if all(a and b for a, b in pairs) else []

    out.append({"goal": "graphs at batch 1 >= 1,000 tok/s", "value": tok("graphs", 1), "target": 1000, "unit": "tok/s"})
    out.append({"goal": "graphs at batch 64 >= 25,000 tok/s", "value": tok("graphs", 64), "target": 25000,
                "unit": "tok/s"})
    r = ratios("long", "graphs")
    out.append({"goal": f"max pos {args.long_max_pos} within 10% of {args.max_pos} (graphs, every batch)",
                "value": min(r) if r else None, "target": 0.9, "unit": "x"})
    r = ratios("eager", "hf")
    out.append({"goal": "eager >= 1.0x transformers at every batch size", "value": min(r) if r else None,
                "target": 1.0, "unit": "x"})
    by = {(e["nextn"], e["graphs"]): e["tok_s"] for e in res.data["bundled"]}
    speed = by[(2, True)] / by[(0, True)] if (2, True) in by and (0, True) in by else None
    out.append({"goal": "bundled nextn 2 with graphs >= 1.4x nextn 0 with graphs at batch 1", "value": speed,
                "target": 1.4, "unit": "x"})
    for g in out:
        g["met"] = None if g["value"] is None else g["value"] >= g["target"]
    return out


def print_goals(res: Results, args) -> None:
    res.data["goals"] = goals(res, args)
    res.save()
    note = " (--small: not the goals' workload; shown for the shape only)" if args.small else ""
    print(f"\ngoals (issue 16){note}:")
    for g in res.data["goals"]:
        value = "not measured" if g["value"] is None else (
            f"{g['value']:.0f} tok/s" if g["unit"] == "tok/s" else f"{g['value']:.2f}x")
        verdict = "-" if g["met"] is None else ("met" if g["met"] else "NOT MET")
        print(f"  {g['goal']:<70} {value:>14}  {verdict}")


# -- main -------------------------------------------------------------------------------------------

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true",
                    help="tiny sizes (hidden 128, 2 layers, batch 1 4, 16 new tokens); automatic without CUDA")
    ap.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    ap.add_argument("--out", type=Path, help="write every number measured to this JSON file, rewritten after each "
                                             "measurement")
    ap.add_argument("--bandwidth-gbs", type=float,
                    help="GPU memory bandwidth in GB/s for the memory-bound limit (default: 3350 on an H100 SXM, "
                         "4800 on an H200; other GPUs need it)")
    ap.add_argument("--batch", type=int, nargs="+", help="batch sizes of the table (default 1 16 64; --small: 1 4)")
    ap.add_argument("--prompt-len", type=int, default=64, help="prompt tokens (random ids; default 64)")
    ap.add_argument("--new-tokens", type=int, help="new tokens per sequence in a timed run (default 128; --small: 16)")
    ap.add_argument("--warm-tokens", type=int, help="new tokens of each cell's warm run (default 16; --small: 4)")
    ap.add_argument("--cell-seconds", type=float,
                    help="a timed run the warm run predicts to take longer runs fewer new tokens, marked * "
                         "(default 40; --small: 20)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="timed runs of each cell and bundled configuration, the best kept (default 1, after one "
                         "warm run)")
    ap.add_argument("--max-pos", type=int, default=4096, help="max_position_embeddings of the model (default 4096)")
    ap.add_argument("--long-max-pos", type=int, default=131072,
                    help="max_position_embeddings of the last row, same weights (default 131072)")
    ap.add_argument("--kv-cache-mib", type=int, help="KV cache of every trtx LLM, MiB (default 4096; --small: 64)")
    ap.add_argument("--bundled-model", default="tiny-arith", help="bundled model of the nextn sweep")
    ap.add_argument("--bundled-prompts", type=int, help="its eval prompts, served one at a time (default 16; "
                                                        "--small: 2)")
    ap.add_argument("--nextn", type=int, nargs="+", default=[0, 1, 2, 3], help="mtp_nextn values of the sweep")
    ap.add_argument("--agree-batch", type=int, help="sequences of the agreement checks (default 8; --small: 4)")
    ap.add_argument("--agree-new-tokens", type=int, help="new tokens of the fp32 agreement check (default 64; "
                                                         "--small: 16)")
    ap.add_argument("--skip", nargs="+", default=[], choices=SKIPPABLE, metavar="PART",
                    help=f"parts not to run: {', '.join(SKIPPABLE)} (long: the --long-max-pos row)")
    ap.add_argument("--workdir", type=Path, help="where the random checkpoints are written, and reused from on a "
                                                 "later run (default: a temporary directory, removed)")
    args = ap.parse_args()
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.device.type == "cuda" and args.device.index is None:
        args.device = torch.device("cuda", torch.cuda.current_device())
    args.small = args.small or args.device.type != "cuda"
    for name, value in DEFAULTS["small" if args.small else "full"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.dtype_name = "bfloat16"
    return args


def main():
    args = parse_args()
    device, res = args.device, Results(args.out)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))       # a timeout still prints what was measured
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    tmp = None if args.workdir else tempfile.TemporaryDirectory()
    root = args.workdir or Path(tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    sizes = MODELS["small" if args.small else "full"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    gbs, gbs_from = bandwidth(args, device)
    res.data["meta"].update(device=str(device), device_name=name, torch=torch.__version__,
                            transformers=transformers.__version__, python=platform.python_version(),
                            small=args.small, dtype=args.dtype_name, batch=args.batch, prompt_len=args.prompt_len,
                            new_tokens=args.new_tokens, warm_tokens=args.warm_tokens, max_pos=args.max_pos,
                            long_max_pos=args.long_max_pos, bandwidth_gbs=gbs, bandwidth_from=gbs_from,
                            kv_cache_mib=args.kv_cache_mib, threads=torch.get_num_threads())
    try:
        print(f"device: {device} ({name}); torch {torch.__version__}, transformers {transformers.__version__}"
              + (f"; {torch.get_num_threads()} threads" if device.type == "cpu" else "")
              + ("; --small sizes" if args.small else ""), flush=True)
        model_dir = build_checkpoint(root, sizes, torch.bfloat16, args.max_pos)
        params, step_bytes = weight_bytes(json.loads((model_dir / "config.json").read_text()), 2)
        res.data["model"].update(sizes, params=params, weight_bytes_per_step=step_bytes, dir=str(model_dir))
        for b in args.batch:
            if gbs:
                res.data["limit"][str(b)] = b * gbs * 1e9 / step_bytes
        res.log(f"model: random Llama, {params / 1e9:.3f}B params ({', '.join(f'{k} {v}' for k, v in sizes.items())})"
                f", {step_bytes / 1e9:.3f} GB of weights read per decode step; bandwidth "
                + (f"{gbs:.0f} GB/s ({gbs_from}): limit {gbs * 1e9 / step_bytes:.0f} tok/s per sequence"
                   if gbs else gbs_from))
        res.save()

        prompts = {b: make_prompts(b, args.prompt_len, sizes["vocab_size"], seed=b) for b in args.batch}
        ref_tokens: dict = {}
        ref = None
        if "hf" not in args.skip or "bf16-agreement" not in args.skip:
            ref = checkpoints().load_reference(model_dir, torch.bfloat16).to(device)
            ref.generation_config.eos_token_id = None
        if "hf" not in args.skip:
            for b in args.batch:
                try:
                    cell = measure_cell(lambda p, n: hf_generate(ref, p, n, device), prompts[b], args, device)
                except Exception as e:
                    res.error(f"transformers batch {b}", e)
                    continue
                ref_tokens[("hf", b)] = cell.pop("tokens")
                finish_cell("hf", b, cell, res)
            free(device)

        agreement_prompts = make_prompts(args.agree_batch, args.prompt_len, sizes["vocab_size"], seed=99)

        def bf16(llm):
            if "bf16-agreement" in args.skip:
                return
            try:
                res.data["agreement"]["bf16_prefill"] = a = bf16_agreement(llm, ref, agreement_prompts, device)
                res.log(f"bf16 prefill top-1 agreement: {a['fraction']:.3f} ({a['agree']}/{a['positions']})")
                res.save()
            except Exception as e:
                res.error("bf16 prefill agreement", e)

        if "eager" not in args.skip:
            run_row("eager", model_dir, prompts, res, args, device, ref_tokens, on_llm=bf16)
        elif "bf16-agreement" not in args.skip:
            llm, _ = build_llm(model_dir, args, device, max_num_seqs=args.agree_batch)
            bf16(llm)
            llm = None
        ref = None
        free(device)
        if "graphs" not in args.skip:
            run_row("graphs", model_dir, prompts, res, args, device, ref_tokens)
        if "bundled" not in args.skip:
            bundled_sweep(args, device, res)
        if "fp32-agreement" not in args.skip:
            try:
                res.data["agreement"]["fp32"] = a = fp32_agreement(root, args, device)
                res.log(f"fp32 greedy tokens identical to transformers: eager {a['eager']}, graphs {a['graphs']}")
                res.save()
            except Exception as e:
                res.error("fp32 agreement", e)
        if "long" not in args.skip:        # last: the slowest row, and the likeliest to run out of memory
            run_row("long", with_max_pos(model_dir, args.long_max_pos), prompts, res, args, device, ref_tokens)
    finally:
        print_table(res, args)
        print_goals(res, args)
        if args.out:
            print(f"\nwrote {args.out}")
        if tmp:
            tmp.cleanup()


if __name__ == "__main__":
    main()
