"""Building a rank's share of the model and loading its weights: the base model's layers of this
pipeline stage, and on the last stage (which drafts) the MTP module.

Invariant 1: the MTP module is never in the base model's layer list; only the last stage builds it
and loads its weights, and a last stage that finds no MTP weights refuses to start.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .checkpoint import load_weights
from .engine_config import EngineConfig
from .model import LlamaForCausalLM
from .mtp import MtpModule
from .parallel import Parallel


@dataclass
class LoadedModel:
    model: LlamaForCausalLM
    mtp: MtpModule | None             # on the last stage when drafting
    tensors: list[str]                # the checkpoint tensors this rank loaded


def load_model(config: EngineConfig, parallel: Parallel) -> LoadedModel:
    cfg, mapping = config.model_config, parallel.mapping
    L = cfg.num_hidden_layers
    drafting = bool(config.mtp_nextn) and mapping.is_last_stage
    if drafting and config.faults.get("drop_mtp_on_last_stage", mapping.rank):
        drafting = False
    dp = parallel.attention_dp_group
    with torch.device(parallel.device):
        model = LlamaForCausalLM(cfg, mapping, parallel.tp, keep_embedding=drafting, dp=dp).eval()
        # Under attention DP each rank drafts for its own requests alone: the (small) MTP module is
        # held whole, so drafting needs no collective and no lockstep.
        mtp = MtpModule(cfg, None if dp else parallel.tp).eval() if drafting else None
    targets = model.weight_targets()
    if mtp is not None:
        targets.update(mtp.weight_targets(f"model.layers.{L}."))
    load_weights(targets, config.model, optional={"lm_head.weight"} if cfg.tie_word_embeddings else set(),
                 skip=_held_elsewhere(targets, L + cfg.num_nextn_predict_layers))
    if config.mtp_nextn and mapping.is_last_stage and mtp is None:
        raise RuntimeError(f"rank {mapping.rank}: mtp_nextn={config.mtp_nextn} but the last pipeline stage holds "
                           f"no MTP module weights (model.layers.{L}.*), so it could never draft")
    return LoadedModel(model, mtp, sorted(targets))


_LAYER = re.compile(r"model\.layers\.(\d+)\.")
_TOP_LEVEL = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}


def _held_elsewhere(targets: dict, num_layers: int):
    """A predicate on checkpoint names: tensors of this model that another pipeline stage holds,
    or of an MTP module that is not in use here. Anything else the rank does not expect is an
    error (a wrong checkpoint), not something to skip."""
    def match(name: str) -> bool:
        if name in targets:
            return False
        m = _LAYER.match(name)
        if m is not None:
            return int(m.group(1)) < num_layers
        return name in _TOP_LEVEL
    return match
