"""The quick tier starts no process. For every test here (and every fixture it uses, module-scoped
ones included) each way of starting one raises ProcessStartError: subprocess, fork, posix_spawn,
exec, os.system and the spawn family. A test that needs a process belongs in tests/functional."""
import os
import subprocess

import _posixsubprocess
import pytest
import torch

if not torch.cuda.is_available():   # Triton kernels run interpreted on CPU; read when triton.jit decorates them
    os.environ.setdefault("TRITON_INTERPRET", "1")

OS_CALLS = ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "execv", "execve", "execl", "execle",
            "execlp", "execlpe", "execvp", "execvpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl",
            "spawnle", "spawnlp", "spawnlpe")


class ProcessStartError(RuntimeError):
    """A unit test tried to start a process."""


def refuse(what: str):
    def call(*args, **kwargs):
        raise ProcessStartError(f"unit tests start no process: move this test to tests/functional ({what} was called)")
    return call


@pytest.fixture(scope="package", autouse=True)
def no_process():
    """Package scope: set up before any module-scoped fixture of tests/unit, undone after its last test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "_execute_child", refuse("subprocess.Popen"))
        patch.setattr(_posixsubprocess, "fork_exec", refuse("_posixsubprocess.fork_exec"))   # multiprocessing's way
        for name in OS_CALLS:
            if hasattr(os, name):
                patch.setattr(os, name, refuse(f"os.{name}"))
        yield
