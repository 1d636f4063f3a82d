"""The Llama-family decoder (Llama, Mistral, Qwen2): embedding, N decoder blocks, final norm, lm_head.

Layers pass (hidden, residual) pairs rather than one summed tensor so that the residual add is
fused into the next norm, and so that a pipeline stage boundary can hand both over unchanged.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .attention import AttentionMetadata, paged_attention
from .config import ModelConfig, rope_inv_freq
from .layers import RMSNorm, RotaryEmbedding, ShardedEmbedding, ShardedLinear, apply_rotary


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, sliding: bool):
        super().__init__()
        self.sliding = sliding
        self.num_heads, self.num_kv_heads, self.head_dim = (
            cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim)
        self.qkv_proj = ShardedLinear(cfg.hidden_size, [("q", cfg.q_size), ("k", cfg.kv_size), ("v", cfg.kv_size)],
                                      bias=cfg.qkv_bias, dtype=cfg.dtype)
        self.o_proj = ShardedLinear(cfg.q_size, [(None, cfg.hidden_size)], bias=cfg.o_bias, dtype=cfg.dtype,
                                    split_dim=1)
        self.q_size, self.kv_size = cfg.q_size, cfg.kv_size

    def forward(self, x, kv_cache, meta: AttentionMetadata, rope):
        qkv = self.qkv_proj(x)                                     # [T, q + k + v]
        tokens, heads, kv_heads, dim = qkv.shape[0], self.num_heads, self.num_kv_heads, self.head_dim
        # q and k are rotated together, written back in place, and k, v then sit side by side in
        # the layout the cache stores: one rotation, one cache write, no concatenation.
        qk = qkv[:, :self.q_size + self.kv_size].view(tokens, heads + kv_heads, dim)
        qk.copy_(apply_rotary(qk, *rope))
        q = qkv[:, :self.q_size].view(tokens, heads, dim)
        kv = qkv[:, self.q_size:].view(tokens, 2 * kv_heads, dim)
        return self.o_proj(paged_attention(q, kv, kv_cache, meta, self.sliding))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        inter = cfg.intermediate_size
        self.gate_up_proj = ShardedLinear(cfg.hidden_size, [("gate", inter), ("up", inter)],
                                          bias=cfg.mlp_bias, dtype=cfg.dtype)
        self.down_proj = ShardedLinear(inter, [(None, cfg.hidden_size)], bias=cfg.mlp_bias, dtype=cfg.dtype,
                                       split_dim=1)
        self.inter = inter

    def forward(self, x):
        gate, up = self.gate_up_proj(x).split([self.inter, self.inter], dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, sliding: bool):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.dtype)
        self.self_attn = Attention(cfg, sliding)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.dtype)
        self.mlp = MLP(cfg)

    def forward(self, hidden, residual, kv_cache, meta, rope):
        residual = hidden if residual is None else hidden + residual
        hidden = self.self_attn(self.input_layernorm(residual), kv_cache, meta, rope)
        residual = hidden + residual
        hidden = self.mlp(self.post_attention_layernorm(residual))
        return hidden, residual


class LlamaForCausalLM(nn.Module):
    """One model class for the three supported architectures; they differ only in config fields
    (Qwen2's qkv bias, Mistral's sliding window), which the layers read."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.rotary = RotaryEmbedding(rope_inv_freq(cfg.rope, cfg.head_dim), cfg.max_position_embeddings)
        self.embed_tokens = ShardedEmbedding(cfg.vocab_size, cfg.hidden_size, cfg.dtype)
        self.layers = nn.ModuleList(DecoderLayer(cfg, cfg.sliding_layers[i]) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.dtype)
        self.lm_head = None if cfg.tie_word_embeddings else ShardedLinear(
            cfg.hidden_size, [(None, cfg.vocab_size)], bias=False, dtype=cfg.dtype)

    def forward(self, input_ids: torch.Tensor, kv_caches: list, meta: AttentionMetadata) -> torch.Tensor:
        """Final-normed hidden states, [T, hidden]."""
        hidden, residual = self.embed_tokens(input_ids), None
        rope = self.rotary.tables(meta.positions, hidden.dtype)
        for layer, kv in zip(self.layers, kv_caches):
            hidden, residual = layer(hidden, residual, kv, meta, rope)
        return self.norm(hidden + residual)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(hidden, weight).float()

    def weight_targets(self) -> dict[str, tuple]:
        """Checkpoint tensor name -> (module, shard, is_bias) for every tensor this model needs."""
        targets = {"model.embed_tokens.weight": (self.embed_tokens, None, False),
                   "model.norm.weight": (self.norm, None, False)}
        if self.lm_head is not None:
            targets["lm_head.weight"] = (self.lm_head, None, False)
        for i, layer in enumerate(self.layers):
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
