#!/usr/bin/env bash
# One-time, idempotent set-up: a virtual environment in .venv with torch and trtx (editable).
#
# torch comes first and deliberately: a bare `torch` requirement on a machine without torch pulls a
# multi-GB CUDA build. Without a GPU we install the CPU build; a wheel on local disk (pip's
# find-links) is preferred, PyTorch's CPU index is the fallback. With a GPU, pip's default build.
#
#   scripts/setup.sh            runtime only
#   scripts/setup.sh test       + test dependencies (pytest, transformers as the reference)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
venv=${TRTX_VENV:-.venv}
py=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)

if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  torch_version=${TRTX_TORCH_VERSION:-2.13.0}
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] GPU found: installing torch==$torch_version (CUDA build)"
    "${pip[@]}" "torch==$torch_version"
  else
    echo "[setup] no GPU: installing the CPU build of torch==$torch_version"
    # A local CPU wheel first (no index: nothing can pull the CUDA build), its dependencies after.
    if "${pip[@]}" --no-index --no-deps "torch==$torch_version" 2>/dev/null; then
      "${pip[@]}" "torch==$torch_version"
    else
      "${pip[@]}" "torch==$torch_version" --index-url https://download.pytorch.org/whl/cpu
    fi
  fi
fi

spec="."
[ -n "$extras" ] && spec=".[$extras]"
echo "[setup] installing trtx ($spec)"
"${pip[@]}" -e "$spec"
