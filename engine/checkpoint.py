"""Reading HF-style checkpoints: `*.safetensors` weights (one file, or shards with their index).

Tensors are read lazily, one at a time, through `safe_open`, so a rank that owns a slice of a
model never holds the whole checkpoint in memory.
"""
from __future__ import annotations

import json
import re
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open

from .errors import ConfigError
from .layers import ShapeMismatch

INDEX_FILE = "model.safetensors.index.json"
# Tensors some checkpoints carry that no forward needs.
_IGNORED = re.compile(r".*rotary_emb\.inv_freq$")


class CheckpointError(ConfigError):
    """A checkpoint cannot be loaded; the message is one line naming the file and the tensor."""


class SafetensorsCheckpoint:
    def __init__(self, model_dir: str | Path):
        self.dir = Path(model_dir)
        index = self.dir / INDEX_FILE
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index}: not a safetensors index ({e})") from None
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in self.dir.glob("*.safetensors"))
            weight_map = None
        if not files:
            raise CheckpointError(f"{self.dir}: no *.safetensors files")
        self._stack = ExitStack()
        self._handles = {}
        for name in files:
            path = self.dir / name
            if not path.exists():
                raise CheckpointError(f"{index}: names shard {name}, which does not exist")
            try:
                self._handles[name] = self._stack.enter_context(safe_open(str(path), framework="pt"))
            except Exception as e:  # safetensors raises its own error types for corrupt headers
                raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from None
        if weight_map is None:
            weight_map = {key: name for name, h in self._handles.items() for key in h.keys()}
        self.weight_map: dict[str, str] = weight_map

    def names(self) -> set[str]:
        return set(self.weight_map)

    def get(self, name: str) -> torch.Tensor:
        return self._handles[self.weight_map[name]].get_tensor(name)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_weights(targets: dict[str, tuple], model_dir: str | Path, optional: set[str] = frozenset(),
                 skip: Callable[[str], bool] | None = None) -> None:
    """Copy every tensor named in `targets` (name -> (module, shard, is_bias)) from the checkpoint.

    A tensor the model needs but the checkpoint lacks, or one the checkpoint has that nothing
    expects, is an error; `optional` names may be absent, and names for which `skip` is true belong to
    another part (e.g. layers another pipeline stage owns) and are ignored."""
    with SafetensorsCheckpoint(model_dir) as ckpt:
        present = ckpt.names()
        for name in sorted(set(targets) - present - set(optional), key=_natural_key):
            raise CheckpointError(f"{ckpt.dir}: missing tensor {name!r}")
        for name in sorted(present - set(targets), key=_natural_key):
            if name in optional or _IGNORED.match(name) or (skip is not None and skip(name)):
                continue
            raise CheckpointError(f"{ckpt.dir}: unexpected tensor {name!r} ({ckpt.weight_map[name]})")
        for name, (module, shard, is_bias) in targets.items():
            if name not in present:
                continue
            tensor = ckpt.get(name)
            try:
                if is_bias:
                    module.load(shard, tensor, is_bias=True)
                else:
                    module.load(shard, tensor)
            except ShapeMismatch as e:
                raise CheckpointError(f"{ckpt.dir}: tensor {name!r} ({ckpt.weight_map[name]}): {e}") from None


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
