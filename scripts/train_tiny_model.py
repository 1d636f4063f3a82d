"""Train the bundled model `tiny-arith`: a ~2.5M-parameter Llama (GQA) with one DeepSeek-V3-style
MTP module, on the arithmetic word problems of scripts/arith_tasks.py, character-level. Seeded and
single-process: the same command gives the same checkpoint on the same machine and torch.

    python scripts/train_tiny_model.py --out models/tiny-arith      # ~25 min on 2 CPU cores

Writes an HF-layout checkpoint (config.json, model.safetensors, tokenizer.json,
generation_config.json) that transformers loads as LlamaForCausalLM, ignoring the MTP layer at
`model.layers.{num_hidden_layers}.*`, and the held-out eval set eval.jsonl (other seed, and no
prompt that also occurs in training).

The model is written here for training (full sequences, causal SDPA); the engine's inference
model reads the same weights. The MTP loss follows DeepSeek-V3: module k sees the base model's
final hidden state at i (normed by `hnorm`) and the embedding of token i+k (normed by `enorm`),
projects their concatenation with `eh_proj`, runs one decoder block, `shared_head.norm` and the
shared lm_head, and predicts token i+k+1.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers


def _sibling(name: str):
    """scripts/NAME.py, loaded by its path: this script is also loaded by path (tests/helpers/
    checkpoints.py), where its folder is not on the import path."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module           # as an import would (dataclasses look it up there)
    spec.loader.exec_module(module)
    return module


make_problems = _sibling("arith_tasks").make_problems

SPECIALS = ["<pad>", "<s>", "</s>"]
CHARS = list("\n !\"'()*+,-./0123456789:;=?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
PAD, BOS, EOS = 0, 1, 2
CONFIG = dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=6,
              num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-5, rope_theta=10000.0,
              max_position_embeddings=256, num_nextn_predict_layers=1, tie_word_embeddings=False)


def rms(x, w, eps):
    return F.rms_norm(x, (x.shape[-1],), w, eps)


class Norm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        return rms(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, h, kv, hd = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        self.h, self.kv, self.hd = h, kv, hd
        self.q_proj, self.k_proj = nn.Linear(d, h * hd, bias=False), nn.Linear(d, kv * hd, bias=False)
        self.v_proj, self.o_proj = nn.Linear(d, kv * hd, bias=False), nn.Linear(h * hd, d, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, i = c["hidden_size"], c["intermediate_size"]
        self.gate_proj, self.up_proj = nn.Linear(d, i, bias=False), nn.Linear(d, i, bias=False)
        self.down_proj = nn.Linear(i, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        eps = c["rms_norm_eps"]
        self.input_layernorm, self.post_attention_layernorm = Norm(c["hidden_size"], eps), Norm(c["hidden_size"], eps)
        self.self_attn, self.mlp = Attention(c), Mlp(c)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class MtpModule(Block):
    def __init__(self, c):
        super().__init__(c)
        d, eps = c["hidden_size"], c["rms_norm_eps"]
        self.enorm, self.hnorm = Norm(d, eps), Norm(d, eps)
        self.eh_proj = nn.Linear(2 * d, d, bias=False)
        self.shared_head = nn.Module()
        self.shared_head.norm = Norm(d, eps)

    def forward(self, h, emb, cos, sin):
        x = self.eh_proj(torch.cat([self.enorm(emb), self.hnorm(h)], dim=-1))
        return super().forward(x, cos, sin)          # shared_head.norm is applied by the caller


def rotate(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class TrainModel(nn.Module):
    def __init__(self, c, vocab):
        super().__init__()
        self.c = c
        L, K = c["num_hidden_layers"], c["num_nextn_predict_layers"]
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(vocab, c["hidden_size"])
        self.model.layers = nn.ModuleList([Block(c) for _ in range(L)] + [MtpModule(c) for _ in range(K)])
        self.model.norm = Norm(c["hidden_size"], c["rms_norm_eps"])
        self.lm_head = nn.Linear(c["hidden_size"], vocab, bias=False)
        inv = 1.0 / c["rope_theta"] ** (torch.arange(0, c["head_dim"], 2).float() / c["head_dim"])
        ang = torch.outer(torch.arange(c["max_position_embeddings"]).float(), inv)
        self.register_buffer("cos", torch.cat([ang, ang], -1).cos(), persistent=False)
        self.register_buffer("sin", torch.cat([ang, ang], -1).sin(), persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02 / (math.sqrt(2 * L) if name.endswith(("o_proj.weight", "down_proj.weight")) else 1))

    def forward(self, ids):
        """Logits of the base model [B, T, V] and of each MTP module k: [B, T-k, V] (position i
        predicts token i+k+1)."""
        L, K = self.c["num_hidden_layers"], self.c["num_nextn_predict_layers"]
        T = ids.shape[1]
        cos, sin = self.cos[:T], self.sin[:T]
        emb = self.model.embed_tokens(ids)
        x = emb
        for layer in self.model.layers[:L]:
            x = layer(x, cos, sin)
        h = self.model.norm(x)
        out = [self.lm_head(h)]
        for k in range(1, K + 1):      # depth k: h at i (post-norm, from depth k-1) and token i+k
            mtp = self.model.layers[L + k - 1]
            h = mtp.shared_head.norm(mtp(h[:, :-1], emb[:, k:], cos[:T - k], sin[:T - k]))
            out.append(self.lm_head(h))
        return out


def write_tokenizer(out: Path, chars=CHARS) -> Tokenizer:
    """A character-level tokenizer.json: SPECIALS, then one token per character of `chars`."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(chars))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS)
    tok.save(str(out / "tokenizer.json"))
    return tok


def batches(problems, tok, batch_size, rng):
    """(ids [B, T], loss mask [B, T]: 1 where the token is part of the answer text or its eos).
    Batches are drawn at random: a length-sorted variant (less padding) was tried once and gave a
    far worse model (8.7% accuracy against 60%), its batches too alike."""
    encoded = []
    for p in problems:
        prompt, target = tok.encode(p["prompt"]).ids, tok.encode(p["target"]).ids + [EOS]
        encoded.append((prompt + target, [0] * len(prompt) + [1] * len(target)))
    while True:
        rng.shuffle(encoded)
        for i in range(0, len(encoded) - batch_size + 1, batch_size):
            rows = encoded[i:i + batch_size]
            T = max(len(r[0]) for r in rows)
            ids = torch.tensor([r[0] + [PAD] * (T - len(r[0])) for r in rows])
            mask = torch.tensor([r[1] + [0] * (T - len(r[1])) for r in rows], dtype=torch.float32)
            yield ids, mask


def masked_ce(logits, labels, mask):
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
    return (loss * mask.reshape(-1)).sum() / mask.sum().clamp(min=1)


def save(model, tok, out: Path, vocab: int) -> None:
    c = model.c
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
              "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "torch_dtype": "float32",
              "bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD, **c}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD, "do_sample": False}, indent=2) + "\n")
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models/tiny-arith")
    ap.add_argument("--steps", type=int, default=1100)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--mtp-weight", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-size", type=int, default=600)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = write_tokenizer(out)
    vocab = tok.get_vocab_size()

    eval_set = make_problems(args.eval_size, seed=args.seed + 1000)
    held_out = {p["prompt"] for p in eval_set}
    train = [p for p in make_problems(args.steps * args.batch // 2 + 2000, seed=args.seed) if p["prompt"] not in held_out]
    with open(out / "eval.jsonl", "w") as f:
        for p in eval_set:
            f.write(json.dumps(p) + "\n")

    model = TrainModel(CONFIG, vocab)
    n_base = sum(p.numel() for n, p in model.named_parameters()
                 if not n.startswith(f"model.layers.{CONFIG['num_hidden_layers']}."))
    print(f"params: base {n_base / 1e6:.2f}M, total {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M; "
          f"{len(train)} training problems, {len(eval_set)} held out", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.05)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    data = batches(train, tok, args.batch, random.Random(args.seed))
    t0 = time.time()
    for step in range(1, args.steps + 1):
        ids, mask = next(data)
        logits = model(ids)
        loss = masked_ce(logits[0][:, :-1], ids[:, 1:], mask[:, 1:])
        mtp_losses = [masked_ce(lg[:, :-1], ids[:, k + 1:], mask[:, k + 1:]) for k, lg in enumerate(logits[1:], 1)]
        total = loss + args.mtp_weight * sum(mtp_losses) / max(1, len(mtp_losses))
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == 1:
            el = time.time() - t0
            print(f"step {step}/{args.steps}  loss {loss.item():.4f}  mtp {' '.join(f'{m.item():.4f}' for m in mtp_losses)}"
                  f"  {el / 60:.1f} min (eta {el / step * (args.steps - step) / 60:.1f})", flush=True)
    save(model, tok, out, vocab)
    print(f"saved {out} after {(time.time() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
