"""The system keys that test-db conditions match against.

GPU facts come from `nvidia-smi` (no torch import: `trtx list` must stay fast); on a machine
without one, `system_gpu_count` is 0 and the gpu keys are absent, so blocks that name them do not
match unless `--match` supplies them.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess

from .errors import UserError


def detect() -> dict:
    import psutil   # here, not at the top: the launcher imports detect_gpus and must start fast
    vm = psutil.virtual_memory()
    info = {
        "sysname": platform.system(),
        "is_linux": platform.system() == "Linux",
        "cpu": platform.machine(),
        "is_aarch64": platform.machine() in ("aarch64", "arm64"),
        "host_mem_total_mib": vm.total // (1 << 20),
        "host_mem_available_mib": vm.available // (1 << 20),
        "system_gpu_count": 0,
    }
    info.update(_os_release())
    info.update(detect_gpus())
    return info


def gpu_short_name(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100 80GB HBM3': upper case, without the vendor."""
    name = name.strip()
    if name.upper().startswith("NVIDIA "):
        name = name[len("NVIDIA "):]
    return name.upper()


def detect_gpus() -> dict:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {}
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    rows = [[c.strip() for c in line.split(",")] for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not rows:
        return {}
    name, memory, cc = (rows[0] + ["", "", ""])[:3]
    info = {"gpu": gpu_short_name(name), "system_gpu_count": len(rows)}
    try:
        info["gpu_memory"] = float(memory)
    except ValueError:
        pass
    if cc:
        info["compute_capability"] = cc
    return info


def _os_release() -> dict:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        if os.path.exists(path):
            fields = {}
            with open(path) as f:
                for line in f:
                    key, _, value = line.strip().partition("=")
                    fields[key] = value.strip('"')
            return {"linux_distribution_name": fields.get("ID", ""), "linux_version": fields.get("VERSION_ID", "")}
    return {}


def parse_matches(pairs: tuple[str, ...]) -> dict:
    """--match KEY=VALUE pairs -> {key: value}; values stay strings (conditions compare forms)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--match expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def system_info(matches: tuple[str, ...] = ()) -> dict:
    info = detect()
    info.update(parse_matches(matches))
    return info
