"""A multi-rank job of more CUDA ranks than visible GPUs is refused in one line before any rank
starts (cli/launch/fit.py); CPU ranks never are. The visible GPUs are simulated in this process."""
import pytest
import torch
from click.testing import CliRunner

from trtx.cli.errors import UserError
from trtx.cli.eval.evaluate import evaluate
from trtx.cli.eval.models import MODELS_DIR
from trtx.cli.launch import launcher
from trtx.cli.launch.fit import gpu_fit_error
from trtx.cli.main import cli
from trtx.engine.engine_config import EngineConfig

MODEL = MODELS_DIR / "tiny-arith"
TASK = MODEL / "tasks" / "arith.yaml"
FIX = "lower tp/pp or set TRTX_DEVICE=cpu for CPU ranks"


@pytest.mark.parametrize("world,visible,kind,expected", [
    (2, 1, "cuda", f"tp 2 x pp 1 = 2 ranks need 2 GPUs, 1 visible; {FIX}"),
    (8, 4, "cuda", f"tp 2 x pp 1 = 8 ranks need 8 GPUs, 4 visible; {FIX}"),
    (2, 2, "cuda", None),
    (1, 1, "cuda", None),
    (4, 8, "cuda", None),
    (8, 1, "cpu", None),              # CPU ranks share the host's cores: never refused
    (8, 0, "cpu", None),
])
def test_the_rule(world, visible, kind, expected):
    assert gpu_fit_error(world, visible, kind, "tp 2 x pp 1") == expected


def test_the_message_names_the_visible_devices():
    assert gpu_fit_error(4, 2, "cuda", "tp 2 x pp 2", "0,3") == \
        f"tp 2 x pp 2 = 4 ranks need 4 GPUs, 2 visible (CUDA_VISIBLE_DEVICES=0,3); {FIX}"
    assert gpu_fit_error(3, 0, "cuda") == f"3 ranks need 3 GPUs, 0 visible; {FIX}"


class LaunchReached(Exception):
    """Raised by the stand-in launcher: the job got past the fit check."""


@pytest.fixture
def gpus(monkeypatch):
    """Simulate N visible GPUs in this process; the launcher raises LaunchReached if reached."""
    def visible(n: int):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    def launch(*args, **kwargs):
        raise LaunchReached()
    monkeypatch.setattr(launcher, "Launch", launch)
    monkeypatch.delenv("TRTX_DEVICE", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return visible


def test_trtx_eval_refuses_two_ranks_on_one_gpu_in_one_line(gpus, monkeypatch, tmp_path):
    gpus(1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    res = CliRunner().invoke(cli, ["eval", "--tp", "2", "--max-samples", "1", "--log-dir", str(tmp_path / "logs")])
    assert res.exit_code == 2, res.output
    assert res.stderr == f"Error: tp 2 x pp 1 = 2 ranks need 2 GPUs, 1 visible (CUDA_VISIBLE_DEVICES=0); {FIX}\n"
    assert not (tmp_path / "logs").exists()          # nothing started, not even the job's folder


def test_attention_dp_counts_its_ranks(gpus, tmp_path):
    gpus(2)
    config = EngineConfig(MODEL, tensor_parallel_size=4, attention_dp=True)
    with pytest.raises(UserError, match=r"^attention-DP tp 4 x pp 1 = 4 ranks need 4 GPUs, 2 visible;"):
        evaluate(config, TASK, 1, timeout_s=60, log_dir=tmp_path)
    assert not (tmp_path / "launcher.log").exists()


@pytest.mark.parametrize("visible,env,device", [
    (1, "cpu", None),          # TRTX_DEVICE=cpu: CPU ranks on a GPU machine
    (0, None, None),           # no GPU: CPU ranks
    (1, None, "cpu"),          # the configuration's own device
    (2, None, None),           # two GPUs for two ranks
])
def test_jobs_that_fit_reach_the_launcher(gpus, monkeypatch, tmp_path, visible, env, device):
    gpus(visible)
    if env:
        monkeypatch.setenv("TRTX_DEVICE", env)
    config = EngineConfig(MODEL, tensor_parallel_size=2, device=device)
    with pytest.raises(LaunchReached):
        evaluate(config, TASK, 1, timeout_s=60, log_dir=tmp_path)


def test_one_named_cuda_device_is_one_gpu_for_every_rank(gpus, tmp_path):
    """device="cuda:0" puts every rank on that GPU, however many are visible."""
    gpus(2)
    config = EngineConfig(MODEL, tensor_parallel_size=2, device="cuda:0")
    with pytest.raises(UserError, match=r"^tp 2 x pp 1 = 2 ranks need 2 GPUs, 1 visible;"):
        evaluate(config, TASK, 1, timeout_s=60, log_dir=tmp_path)
