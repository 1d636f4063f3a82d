"""The launcher's command lines for mpirun, torchrun and srun (build_command), built without
starting anything."""
import os

import pytest

from trtx.cli.launch.launcher import build_command

pytestmark = pytest.mark.timeout(180)


def test_launcher_flags_and_alternatives(tmp_path):
    cmd = build_command("mpirun", 64, ["python", "x.py"], tmp_path, ["MASTER_PORT"])
    assert "--oversubscribe" in cmd and ["-x", "MASTER_PORT"] == cmd[cmd.index("-x"):cmd.index("-x") + 2]
    assert ("--allow-run-as-root" in cmd) == (os.geteuid() == 0)
    assert "--oversubscribe" not in build_command("mpirun", 1, ["python", "x.py"], tmp_path, [])
    srun = build_command("srun", 8, ["python", "x.py"], tmp_path, [])
    assert srun[:4] == ["srun", "--ntasks=8", "--kill-on-bad-exit=1", "--export=ALL"]
    assert srun[-3:] == ["--", "python", "x.py"] and any(a.endswith("rank_entry.py") for a in srun)
    assert "--nproc-per-node=2" in build_command("torchrun", 2, ["x"], tmp_path, [])
