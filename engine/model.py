"""The Llama-family decoder (Llama, Mistral, Qwen2): embedding, N decoder blocks, final norm, lm_head.

Layers pass (hidden, residual) pairs rather than one summed tensor so that the residual add is
fused into the next norm, and so that a pipeline stage boundary can hand both over unchanged.

Under tensor parallelism each block holds its rank's heads and MLP columns and all-reduces the
row-parallel outputs; under pipeline parallelism a rank builds only its stage's blocks (plus the
embedding on the first stage, the final norm and lm_head on the last), so it holds no weight it
does not run.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .attention import AttentionMetadata, paged_attention
from .config import ModelConfig, rope_inv_freq
from .layers import RMSNorm, RotaryEmbedding, ShardedLinear, TokenEmbedding, rotary_, silu_and_mul, whole
from .parallel import AttentionDataParallel, RankMapping, TensorParallel, even_slice, head_shard, stage_layers


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, sliding: bool, tp: TensorParallel):
        super().__init__()
        self.sliding, self.tp, dim = sliding, tp, cfg.head_dim
        heads = head_shard(cfg.num_attention_heads, cfg.num_key_value_heads, tp.size, tp.rank)
        self.num_heads, self.num_kv_heads, self.head_dim = heads.q_count, heads.kv_count, dim
        self.q_size, self.kv_size = heads.q_count * dim, heads.kv_count * dim
        self.qkv_proj = ShardedLinear(cfg.hidden_size, [("q", cfg.q_size, heads.q_start * dim, self.q_size),
                                                        ("k", cfg.kv_size, heads.kv_start * dim, self.kv_size),
                                                        ("v", cfg.kv_size, heads.kv_start * dim, self.kv_size)],
                                      bias=cfg.qkv_bias, dtype=cfg.dtype)
        self.o_proj = ShardedLinear(cfg.q_size, [whole(None, cfg.hidden_size)], bias=cfg.o_bias, dtype=cfg.dtype,
                                    in_slice=(heads.q_start * dim, self.q_size), add_bias=tp.rank == 0)

    def forward(self, x, kv_cache, meta: AttentionMetadata, rope):
        qkv = self.qkv_proj(x)                                     # [T, q + k + v]
        tokens, heads, kv_heads, dim = qkv.shape[0], self.num_heads, self.num_kv_heads, self.head_dim
        # q and k are rotated together, written back in place, and k, v then sit side by side in
        # the layout the cache stores: one rotation, one cache write, no concatenation.
        qk = qkv[:, :self.q_size + self.kv_size].view(tokens, heads + kv_heads, dim)
        rotary_(qk, *rope, triton=meta.triton)
        q = qkv[:, :self.q_size].view(tokens, heads, dim)
        kv = qkv[:, self.q_size:].view(tokens, 2 * kv_heads, dim)
        return self.tp.all_reduce(self.o_proj(paged_attention(q, kv, kv_cache, meta, self.sliding)))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, tp: TensorParallel, dp: AttentionDataParallel | None = None):
        super().__init__()
        self.tp, self.dp, full = tp, dp, cfg.intermediate_size
        start, self.inter = even_slice(full, tp.size, tp.rank, "intermediate_size")
        self.gate_up_proj = ShardedLinear(cfg.hidden_size, [("gate", full, start, self.inter), ("up", full, start, self.inter)],
                                          bias=cfg.mlp_bias, dtype=cfg.dtype)
        self.down_proj = ShardedLinear(full, [whole(None, cfg.hidden_size)], bias=cfg.mlp_bias, dtype=cfg.dtype,
                                       in_slice=(start, self.inter), add_bias=tp.rank == 0)

    def forward(self, x, triton: bool = False):
        if self.dp is not None:          # attention DP: this rank's share of every rank's tokens
            x = self.dp.gather(x)
        out = self.tp.all_reduce(self.down_proj(silu_and_mul(self.gate_up_proj(x), triton)))
        return out if self.dp is None else self.dp.own(out)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, sliding: bool, tp: TensorParallel, dp: AttentionDataParallel | None = None):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.dtype)
        # Under attention DP every rank holds every head and attends over its own requests alone.
        self.self_attn = Attention(cfg, sliding, TensorParallel() if dp is not None else tp)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.dtype)
        self.mlp = MLP(cfg, tp, dp)

    def forward(self, hidden, residual, kv_cache, meta, rope):
        triton = meta.triton
        normed, residual = self.input_layernorm.add(hidden, residual, triton)
        hidden = self.self_attn(normed, kv_cache, meta, rope)
        normed, residual = self.post_attention_layernorm.add(hidden, residual, triton)
        return self.mlp(normed, triton), residual


class LlamaForCausalLM(nn.Module):
    """One model class for the three supported architectures; they differ only in config fields
    (Qwen2's qkv bias, Mistral's sliding window), which the layers read.

    `self.layers` holds this stage's blocks only; `self.layer_ids` their global indices."""

    def __init__(self, cfg: ModelConfig, mapping: RankMapping | None = None, tp: TensorParallel | None = None,
                 keep_embedding: bool = False, dp: AttentionDataParallel | None = None):
        super().__init__()
        mapping, tp = mapping or RankMapping(), tp or TensorParallel()
        self.config, self.mapping = cfg, mapping
        self.layer_ids = stage_layers(cfg.num_hidden_layers, mapping.pp_size, mapping.pp_rank)
        first, last = mapping.is_first_stage, mapping.is_last_stage
        self.rotary = RotaryEmbedding(rope_inv_freq(cfg.rope, cfg.head_dim), cfg.max_position_embeddings)
        # The last stage needs the embedding too when lm_head is tied to it, or to feed MTP drafting.
        self.embed_tokens = (TokenEmbedding(cfg.vocab_size, cfg.hidden_size, cfg.dtype)
                             if first or (last and (cfg.tie_word_embeddings or keep_embedding)) else None)
        self.layers = nn.ModuleList(DecoderLayer(cfg, cfg.sliding_layers[i], tp, dp) for i in self.layer_ids)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.dtype) if last else None
        self.lm_head = None if cfg.tie_word_embeddings or not last else ShardedLinear(
            cfg.hidden_size, [whole(None, cfg.vocab_size)], bias=False, dtype=cfg.dtype)

    def forward(self, input_ids: torch.Tensor, kv_caches: list, meta: AttentionMetadata,
                hidden: torch.Tensor | None = None, residual: torch.Tensor | None = None):
        """This stage's blocks over the batch. The first stage starts from the token embeddings,
        later stages from the (hidden, residual) the previous stage handed over. The last stage
        returns the final-normed hidden states [T, hidden]; the others the pair to hand on."""
        if self.mapping.is_first_stage:
            hidden, residual = self.embed_tokens(input_ids), None
        rope = self.rotary.tables(meta.positions, hidden.dtype)
        for layer, kv in zip(self.layers, kv_caches):
            hidden, residual = layer(hidden, residual, kv, meta, rope)
        if self.mapping.is_last_stage:
            return self.norm.add(hidden, residual, meta.triton)[0]
        return hidden, residual

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(hidden, weight).float()

    def weight_targets(self) -> dict[str, tuple]:
        """Checkpoint tensor name -> (module, shard, is_bias) for every tensor this rank holds."""
        targets = {}
        if self.embed_tokens is not None:
            targets["model.embed_tokens.weight"] = (self.embed_tokens, None, False)
        if self.norm is not None:
            targets["model.norm.weight"] = (self.norm, None, False)
        if self.lm_head is not None:
            targets["lm_head.weight"] = (self.lm_head, None, False)
        for i, layer in zip(self.layer_ids, self.layers):
            targets.update(layer_targets(f"model.layers.{i}.", layer))
        return targets


def layer_targets(prefix: str, layer: DecoderLayer) -> dict[str, tuple]:
    """Checkpoint names -> (module, shard, is_bias) of one decoder block's tensors."""
    attn, mlp = layer.self_attn, layer.mlp
    targets = {prefix + "input_layernorm.weight": (layer.input_layernorm, None, False),
               prefix + "post_attention_layernorm.weight": (layer.post_attention_layernorm, None, False)}
    linears = [("self_attn.q_proj", attn.qkv_proj, "q"), ("self_attn.k_proj", attn.qkv_proj, "k"),
               ("self_attn.v_proj", attn.qkv_proj, "v"), ("self_attn.o_proj", attn.o_proj, None),
               ("mlp.gate_proj", mlp.gate_up_proj, "gate"), ("mlp.up_proj", mlp.gate_up_proj, "up"),
               ("mlp.down_proj", mlp.down_proj, None)]
    for name, module, shard in linears:
        targets[prefix + name + ".weight"] = (module, shard, False)
        if module.bias is not None:
            targets[prefix + name + ".bias"] = (module, shard, True)
    return targets
