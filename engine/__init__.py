"""trtx's bundled inference engine: Llama-family checkpoints, paged KV cache, continuous batching.

    from trtx.engine import LLM, SamplingParams
    outs = LLM(model_dir).generate(["a prompt"], SamplingParams(max_tokens=32))
"""
from .llm import LLM
from .request import CompletionOutput, RequestOutput
from .sampling import SamplingParams

__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput"]
