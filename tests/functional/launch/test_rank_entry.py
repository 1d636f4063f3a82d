"""The rank entry program (cli/launch/rank_entry.py) run by itself, as a launcher starts it on each
rank: each local rank sees one GPU."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(180)


def test_each_local_rank_sees_one_gpu(tmp_path):
    """The rank entry's GPU choice, on the real entry program (no GPU needed to check the mapping)."""
    from trtx.cli.launch import rank_entry
    seen = []
    for local in range(4):
        env = dict(os.environ, OMPI_COMM_WORLD_RANK=str(local), OMPI_COMM_WORLD_SIZE="4",
                   OMPI_COMM_WORLD_LOCAL_RANK=str(local), TRTX_GPUS_PER_NODE="2")
        env.pop("CUDA_VISIBLE_DEVICES", None)
        subprocess.run([sys.executable, "-S", rank_entry.__file__, str(tmp_path), "--", sys.executable, "-c",
                        "import os; print('gpu', os.environ['CUDA_VISIBLE_DEVICES'], os.environ['LOCAL_RANK'])"],
                       env=env, check=True, timeout=60)
        seen.append((tmp_path / f"rank-{local}.log").read_text().strip())
    assert seen == ["gpu 0 0", "gpu 1 1", "gpu 0 2", "gpu 1 3"]
