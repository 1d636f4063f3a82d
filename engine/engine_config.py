"""The engine's configuration: every option `LLM(model, **options)` takes, declared once here.

Each option is a field of EngineConfig whose metadata holds its help text, its range or choices,
and its command-line flags; the command line (trtx eval) builds its options from these fields,
the config checks every value once when it is built, and ranks receive it as data (`as_dict` /
`from_dict`), never as a re-declared argument parser. Rules that join options to each other or
to the checkpoint (decode graphs and attention DP need pp 1, the model must split tp x pp ways,
MTP needs an MTP module) are checked here too, before any rank starts.
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import ConfigError
from .faults import Faults

if TYPE_CHECKING:
    from .config import ModelConfig

# torch (and the modules that need it) load when a configuration is built, not when this module is
# imported: `trtx --help` and `trtx eval --help` read the options' declarations alone.


def option(default: Any, help: str, *, kind: type | None = None, low: int | None = None, high: int | None = None,
           choices: tuple[str, ...] | None = None, flags: tuple[str, ...] | None = (),
           normalise: Callable[[Any], Any] | None = None) -> Any:
    """An engine option: its default, help, type (that of the default unless given: an option
    whose default is None may also be None), range (low..high) or choices, its command-line flags
    besides --the-field-name (flags=None: not a command-line option), and the function that gives
    a value its one spelling (raising ConfigError for one it cannot take) before it is checked."""
    return field(default=default, metadata={"help": help, "kind": kind or type(default), "low": low, "high": high,
                                            "choices": choices, "flags": flags, "normalise": normalise})


def _dtype_name(value) -> str:
    """auto, or the canonical name of any spelling parse_dtype takes (bf16, torch.float16, ...)."""
    from .config import parse_dtype
    return value if value == "auto" else str(parse_dtype(value)).removeprefix("torch.")


def _device_name(value) -> str:
    import torch
    try:
        return str(torch.device(value))
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device {value!r} is not a torch device ({e})") from None


@dataclass(frozen=True)
class EngineConfig:
    model: str      # a checkpoint directory: config.json, *.safetensors, tokenizer.json
    tensor_parallel_size: int = option(
        1, "Tensor-parallel ranks (attention heads and MLP columns split across them).", low=1, flags=("--tp",))
    pipeline_parallel_size: int = option(
        1, "Pipeline stages (layers split across them). tp x pp ranks run under the launcher.", low=1,
        flags=("--pp",))
    attention_dp: bool = option(
        False, "Attention data parallel across the tensor-parallel ranks (each owns its requests, with its own "
               "KV cache), MLP tensor parallel.", flags=("--adp",))
    mtp_nextn: int = option(
        0, "Draft this many tokens per step with the model's MTP module and verify them in one forward "
           "(0: no speculation).", low=0, high=8)
    dtype: str = option("auto", "Weights and activations: auto (the checkpoint's torch_dtype), float32, bfloat16 "
                                "or float16.", choices=("auto", "float32", "bfloat16", "float16"),
                    normalise=_dtype_name)
    max_num_seqs: int = option(64, "Requests in flight at once (the batch size).", low=1)
    max_num_tokens: int = option(2048, "Tokens one step may compute (prefill chunks and decodes together).", low=1)
    block_size: int = option(16, "Tokens per KV cache block.", low=1, flags=None)
    num_kv_blocks: int | None = option(None, "KV cache size in blocks (default: from kv_cache_memory).", kind=int,
                                       low=2, flags=None)
    kv_cache_memory: int | None = option(None, "KV cache size in bytes (default: a share of free memory).",
                                         kind=int, low=1, flags=None)
    device: str | None = option(None, "torch device of every rank (default: one GPU per rank, else CPU).",
                                kind=str, flags=None, normalise=_device_name)
    gather_iteration_stats: bool = option(
        False, "Attention DP: every rank collects every rank's per-iteration statistics.", flags=None)
    warmup: bool = option(False, "Run every batch shape once before serving (shapes agreed by all ranks).")
    on_warmup_oom: str = option("skip", "A warmup shape that does not fit on some rank: every rank skips it, or "
                                        "all stop.", choices=("skip", "stop"), flags=("--warmup-oom",))
    warmup_memory_budget: int | None = option(None, "Bytes a warmup shape may use (default: free memory).",
                                              kind=int, low=1, flags=None)
    decode_graphs: bool = option(
        False, "Replay decode steps as graphs captured per batch size, padded (implies warmup; pp 1). CUDA "
               "graphs on GPUs; on CPU the same padded path runs eagerly, for testing.", flags=("--graphs",))
    faults: Faults = field(default_factory=Faults.from_env, metadata={"flags": None})   # TRTX_FAULTS, parsed
    # Read from the checkpoint, not an option.
    model_config: ModelConfig = field(init=False, repr=False, compare=False, metadata={"flags": None})

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        put("model", str(self.model))
        for f in options():
            value, normalise = getattr(self, f.name), f.metadata["normalise"]
            if value is not None and normalise is not None:
                value = normalise(value)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool) and f.metadata["kind"] is int:
                value = int(value)                      # numpy integers and the like
            _check(f, value)
            put(f.name, value)
        if isinstance(self.faults, str):
            put("faults", Faults.parse(self.faults))
        elif not isinstance(self.faults, Faults):
            raise ConfigError(f"faults must be a TRTX_FAULTS string, got {self.faults!r}")
        if not Path(self.model).is_dir():
            raise FileNotFoundError(f"model directory {self.model} does not exist")
        from .config import ModelConfig, parse_dtype
        from .parallel import check_layout
        model_config = ModelConfig.from_dir(self.model)
        if self.dtype != "auto":
            model_config.dtype = parse_dtype(self.dtype)
        put("model_config", model_config)
        tp, pp = self.tensor_parallel_size, self.pipeline_parallel_size
        if self.decode_graphs and pp > 1:
            raise ConfigError("decode graphs need pp 1 (pipeline stages exchange micro-batches between forwards)")
        check_layout(model_config, tp, pp, self.attention_dp)   # attention DP as asked: it needs pp 1
        put("attention_dp", self.attention_dp and tp > 1)      # one rank has no one to share with
        put("warmup", self.warmup or self.decode_graphs)        # graphs are captured during warmup
        if self.mtp_nextn and model_config.num_nextn_predict_layers != 1:
            raise ConfigError(f"mtp_nextn={self.mtp_nextn} needs a checkpoint with one MTP module "
                              f"(num_nextn_predict_layers=1 in config.json); this one has "
                              f"{model_config.num_nextn_predict_layers}")

    @property
    def world_size(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    def as_dict(self) -> dict:
        """The options as JSON-ready data (what a rank receives)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model_config"}
        data["faults"] = self.faults.spec
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "EngineConfig":
        return cls(**data)

    @classmethod
    def from_kwargs(cls, model: str | Path, **kwargs) -> "EngineConfig":
        """`LLM(model, **kwargs)`: an unknown keyword is a TypeError naming the known ones."""
        known = {f.name for f in dataclasses.fields(cls) if f.init} - {"model"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown engine option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(model, **kwargs)


def options() -> list[dataclasses.Field]:
    """The engine options (every field a caller sets, but the model)."""
    return [f for f in dataclasses.fields(EngineConfig) if "help" in f.metadata]


def _check(f: dataclasses.Field, value) -> None:
    meta, name = f.metadata, f.name
    if value is None and f.default is None:
        return
    kind = meta["kind"]
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")
    elif kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        if meta["low"] is not None and value < meta["low"] or meta["high"] is not None and value > meta["high"]:
            bounds = f"between {meta['low']} and {meta['high']}" if meta["high"] is not None else f">= {meta['low']}"
            raise ConfigError(f"{name} must be {bounds}, got {value}")
    elif not isinstance(value, kind):
        raise ConfigError(f"{name} must be a {kind.__name__}, got {value!r}")
    elif meta["choices"] is not None and value not in meta["choices"]:
        raise ConfigError(f"{name} must be one of {', '.join(meta['choices'])}, got {value!r}")
