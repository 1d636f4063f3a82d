"""Every device decision in one place: which device a rank computes on, which collective backend it
uses, and how much memory it may count on.

CUDA when a GPU is visible (one per rank, chosen by local rank), CPU otherwise; `TRTX_DEVICE=cpu`
forces CPU ranks on a GPU machine (e.g. to run a GPU test list's configuration on CPU).
Decode attention: the Triton kernel on CUDA, SDPA on CPU; `TRTX_ATTENTION=triton|sdpa` overrides
(with TRITON_INTERPRET=1, the Triton kernel runs on CPU tensors: how CI tests it).
"""
from __future__ import annotations

import importlib
import os

import psutil
import torch

from .errors import ConfigError


def select_device(local_rank: int = 0) -> torch.device:
    forced = os.environ.get("TRTX_DEVICE")
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def attention_backend(device: torch.device) -> str:
    """The decode attention a rank runs (engine/attention.py)."""
    forced = os.environ.get("TRTX_ATTENTION")
    if forced:
        if forced not in ("triton", "sdpa"):
            raise ConfigError(f"TRTX_ATTENTION={forced!r}: expected 'triton' or 'sdpa'")
        if forced == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ConfigError("TRTX_ATTENTION=triton on CPU ranks needs TRITON_INTERPRET=1 (Triton's interpreter)")
        return forced
    if device.type != "cuda":
        return "sdpa"
    try:
        importlib.import_module("triton")   # CUDA builds of torch ship it; one that fails to import is no backend
    except ImportError:
        return "sdpa"
    return "triton"


def configure_device(device: torch.device) -> None:
    """Process-wide settings of a CUDA rank. PyTorch's cuDNN attention builds a plan per new
    shape (~0.6 ms of CPU each, measured on an H200): every prefill length is a new shape, so the
    flash and memory-efficient SDPA kernels, which plan nothing, are used instead."""
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)


def to_device(host, device: torch.device, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """Host data (a list, or a tensor built on the host) on `device` without waiting for the
    device: CUDA stages a pageable source before the copy call returns, so the source may change
    at once, while a blocking copy (or indexing a CUDA tensor with a Python list) would wait for
    every kernel queued before it. Every step's host-to-device copy goes through here."""
    tensor = host if isinstance(host, torch.Tensor) else torch.tensor(host, dtype=dtype)
    return tensor.to(device, non_blocking=True)


def share_cpu_cores(device: torch.device, local_world_size: int) -> None:
    """CPU ranks on one host split its cores between them. Left alone, each rank would start a
    thread per core and N ranks would oversubscribe the cores N times over, every GEMM waiting on
    descheduled threads. An explicit OMP_NUM_THREADS wins."""
    if device.type != "cpu" or local_world_size <= 1 or "OMP_NUM_THREADS" in os.environ:
        return
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local_world_size))


def dist_backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def free_memory_bytes(device: torch.device) -> int:
    """Memory this rank could still allocate: free GPU memory, or available host RAM on CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return int(psutil.virtual_memory().available)


def default_kv_cache_bytes(device: torch.device) -> int:
    """The KV cache's share of free memory when the caller does not size it: most of a GPU's free
    memory; on CPU a modest slice of RAM, since ranks share the host."""
    free = free_memory_bytes(device)
    if device.type == "cuda":
        return int(free * 0.85)
    return int(min(free * 0.1, 2 << 30))
