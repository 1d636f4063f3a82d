"""`trtx eval` through the real console script refuses more CUDA ranks than visible GPUs in one
line before any rank starts. No GPU is needed: TRTX_DEVICE=cuda with no device visible is such a
job on any machine."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TRTX = shutil.which("trtx", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.timeout(600)


def test_cuda_ranks_without_gpus_are_refused_before_any_rank_starts(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path), TRTX_DEVICE="cuda", CUDA_VISIBLE_DEVICES="")
    res = subprocess.run([TRTX, "eval", "--tp", "2", "--pp", "2", "--max-samples", "1"], capture_output=True,
                         text=True, timeout=600, env=env)
    assert res.returncode == 2, res.stderr
    assert res.stderr == ("Error: tp 2 x pp 2 = 4 ranks need 4 GPUs, 0 visible (CUDA_VISIBLE_DEVICES=); "
                          "lower tp/pp or set TRTX_DEVICE=cpu for CPU ranks\n")
    assert not list(tmp_path.glob("trtx-*"))          # no job folder, no mpirun session
