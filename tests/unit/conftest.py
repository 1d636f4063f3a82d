"""The quick tier starts no process. For every test here (and every fixture it uses, module-scoped
ones included) each way of starting one raises ProcessStartError: subprocess, fork, posix_spawn,
exec, os.system and the spawn family. A test that needs a process belongs in tests/functional.
One exception: Triton's compiler on a GPU machine (ptxas, ldconfig, the C compiler of its kernel
launcher) is part of compiling a kernel, not a process a test starts."""
import os
import subprocess
import sys

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


def refuse(what: str, original):
    def call(*args, **kwargs):
        if _called_by_triton():
            return original(*args, **kwargs)
        raise ProcessStartError(f"unit tests start no process: move this test to tests/functional ({what} was called)")
    return call


def _called_by_triton() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if f"{os.sep}triton{os.sep}" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


@pytest.fixture(scope="package", autouse=True)
def no_process():
    """Package scope: set up before any module-scoped fixture of tests/unit, undone after its last test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "_execute_child", refuse("subprocess.Popen", subprocess.Popen._execute_child))
        patch.setattr(_posixsubprocess, "fork_exec",        # multiprocessing's way
                      refuse("_posixsubprocess.fork_exec", _posixsubprocess.fork_exec))
        for name in OS_CALLS:
            if hasattr(os, name):
                patch.setattr(os, name, refuse(f"os.{name}", getattr(os, name)))
        yield
