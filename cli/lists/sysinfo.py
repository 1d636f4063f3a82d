"""The system keys that test-db conditions match against, and the platform names that
`full:PLATFORM/` waives match against.

GPU facts come from `nvidia-smi` (no torch import: `trtx list` must stay fast); on a machine
without one, `system_gpu_count` is 0 and the gpu keys are absent, so blocks that name them do not
match unless `--match` supplies them. Platform names are derived from the keys after `--match`
has overridden them (see platform_names), so `--match gpu=B200` also makes the system a B200 for
waives.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess

from ..errors import UserError


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
    product = _dmi_product_name()
    if product:
        info["product_name"] = product
    return info


def _dmi_product_name() -> str:
    """The machine's model as its firmware reports it ('DGXH100', 'NVIDIA DGX B200', ...)."""
    try:
        with open("/sys/class/dmi/id/product_name") as f:
            return f.read().strip()
    except OSError:
        return ""


def gpu_short_name(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100 80GB HBM3': upper case, without the vendor (also as
    'NVIDIA_', as in --match gpu=NVIDIA_B200)."""
    name = name.strip().upper()
    return re.sub(r"^NVIDIA[ _]+", "", name)


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


def platform_names(info: dict) -> list[str]:
    """The names a `full:PLATFORM/` waive may use for this system (matched whole, any case):
      sm<major><minor>      from compute_capability: "10.0" -> sm100, "9.0" (or "9") -> sm90
      <GPU>, NVIDIA_<GPU>   the gpu name, blanks as underscores: H100_PCIE, NVIDIA_H100_PCIE
      DGX_<MODEL>           on a DGX (product_name holds "DGX"): the gpu name's first word, DGX_H100"""
    names = []
    cc = _compute_capability(info)
    if cc:
        names.append(f"sm{cc[0]}{cc[1]}")
    gpu = gpu_short_name(str(info.get("gpu", "")))
    if gpu:
        underscored = "_".join(gpu.split())
        names += [underscored, f"NVIDIA_{underscored}"]
        if "DGX" in str(info.get("product_name", "")).upper():
            names.append(f"DGX_{gpu.split()[0]}")
    return names


def check_platform(name: str, option: str) -> str:
    """A platform name as given on the command line: non-empty, without blanks or '/' (which
    would make `full:NAME/` read differently)."""
    if not name or re.search(r"[\s/]", name):
        raise UserError(f"{option}{name!r}: a platform name must be non-empty, without blanks or '/'")
    return name


def parse_matches(pairs: tuple[str, ...]) -> dict:
    """--match KEY=VALUE pairs -> {key: value}; values stay strings (conditions compare forms)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--match expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def system_info(matches: tuple[str, ...] = (), platforms: tuple[str, ...] = ()) -> dict:
    """Detected keys, overridden by --match; `platforms` lists the platform names: the derived
    ones, then those named with --platform NAME or --match platform=NAME (each adds one)."""
    info = detect()
    named = [check_platform(p, "--platform ") for p in platforms]
    for pair in matches:
        key, sep, value = pair.partition("=")
        if sep and key.strip() == "platform":
            named.append(check_platform(value.strip(), "--match platform="))
    info.update({k: v for k, v in parse_matches(matches).items() if k != "platform"})
    for key, value in capability_keys(info).items():
        info.setdefault(key, value)         # a --match of the key itself wins
    info["platforms"] = list(dict.fromkeys(platform_names(info) + named))
    return info


def capability_keys(info: dict) -> dict:
    """Keys TensorRT-LLM's test-db conditions use that follow from compute_capability (detected or
    --match'ed): supports_fp8 (Ada and later, 8.9+) and supports_tf32 (Ampere and later, 8.0+).
    Without a compute capability they stay absent, and a block that names them does not apply."""
    cc = _compute_capability(info)
    if not cc:
        return {}
    version = (int(cc[0]), int(cc[1]))
    return {"supports_fp8": version >= (8, 9), "supports_tf32": version >= (8, 0)}


def _compute_capability(info: dict) -> tuple[str, str] | None:
    """(major, minor) as written of the compute_capability key ("9" reads as "9", "0"), or None
    when it is absent or not a version."""
    cc = re.fullmatch(r"(\d+)(?:\.(\d+))?", str(info.get("compute_capability", "")).strip())
    return (cc.group(1), cc.group(2) or "0") if cc else None
