"""Whether a multi-rank engine job fits this host's GPUs, checked before any rank starts.

Each rank of a CUDA job takes a GPU of its own (cli/launch/rank_entry.py, engine/device.py). A job
of more ranks than the GPUs visible here would put two ranks on one GPU, and NCCL then fails inside
the ranks ("Duplicate GPU detected"), after every rank started and loaded. `check_gpu_fit` refuses
such a job first, in one line. CPU ranks (no GPU, or TRTX_DEVICE=cpu) are never refused.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from trtx.engine.engine_config import EngineConfig


def gpu_fit_error(world_size: int, visible_gpus: int, device_kind: str, layout: str = "",
                  cuda_visible_devices: str | None = None) -> str | None:
    """The one-line refusal of a job of `world_size` ranks on `device_kind` ("cuda", "cpu", ...)
    when `visible_gpus` GPUs are visible, or None when it fits. `layout` names the ranks
    ("tp 2 x pp 1"); `cuda_visible_devices`, when set, is quoted in the message."""
    if device_kind != "cuda" or world_size <= visible_gpus:
        return None
    what = f"{layout} = {world_size} ranks" if layout else f"{world_size} ranks"
    where = f" (CUDA_VISIBLE_DEVICES={cuda_visible_devices})" if cuda_visible_devices is not None else ""
    return (f"{what} need {world_size} GPUs, {visible_gpus} visible{where}; "
            f"lower tp/pp or set TRTX_DEVICE=cpu for CPU ranks")


def layout_of(config: EngineConfig) -> str:
    tp, pp = config.tensor_parallel_size, config.pipeline_parallel_size
    return f"{'attention-DP ' if config.attention_dp else ''}tp {tp} x pp {pp}"


def check_gpu_fit(config: EngineConfig) -> None:
    """Raise UserError (one line, exit 2) when the ranks of `config` would run on CUDA and there
    are fewer GPUs visible on this host than ranks. The device is the ranks' own choice: the
    configuration's device, else engine/device.py's select_device (TRTX_DEVICE, then CUDA when
    available)."""
    import torch

    from trtx.engine.device import select_device

    kind = torch.device(config.device).type if config.device is not None else select_device(0).type
    visible = torch.cuda.device_count() if kind == "cuda" else 0
    if kind == "cuda" and config.device is not None:     # one named device: every rank would share it
        visible = min(visible, 1)
    error = gpu_fit_error(config.world_size, visible, kind, layout_of(config), os.environ.get("CUDA_VISIBLE_DEVICES"))
    if error:
        raise UserError(error)
