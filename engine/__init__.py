"""trtx's bundled inference engine: Llama-family checkpoints, paged KV cache, continuous batching.

    from trtx.engine import LLM, SamplingParams
    outs = LLM(model_dir).generate(["a prompt"], SamplingParams(max_tokens=32))

The names load on first use (PEP 562): importing trtx.engine.engine_config to declare `trtx eval`'s
options must not import torch, which takes seconds.
"""
import importlib

_NAMES = {"LLM": "llm", "SamplingParams": "sampling", "RequestOutput": "request", "CompletionOutput": "request",
          "ContinuationScore": "request"}
__all__ = list(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
