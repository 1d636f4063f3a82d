"""The guard of the quick tier (conftest.py): every way of starting a process raises here."""
import multiprocessing
import os
import subprocess
import sys

import pytest

from tests.unit.conftest import ProcessStartError

GUARDED = "unit tests start no process: move this test to tests/functional"


def fork_and_leave():
    if os.fork() == 0:             # reached only if the guard is gone: the child leaves at once
        os._exit(0)


@pytest.mark.parametrize("start", [
    lambda: subprocess.run([sys.executable, "-c", "pass"]),
    lambda: subprocess.check_output(["/no/such/program"]),     # never a real program: nothing runs if unguarded
    fork_and_leave,
    lambda: os.posix_spawn("/no/such/program", ["x"], {}),
    lambda: os.posix_spawnp("/no/such/program", ["x"], {}),
    lambda: os.execv("/no/such/program", ["x"]),
    lambda: os.execvp("/no/such/program", ["x"]),
    lambda: os.system("exit 0"),
    lambda: multiprocessing.get_context("spawn").Process(target=print).start(),
], ids=["subprocess.run", "check_output", "fork", "posix_spawn", "posix_spawnp", "execv", "execvp", "system",
        "multiprocessing"])
def test_starting_a_process_raises_and_says_where_the_test_belongs(start):
    with pytest.raises(ProcessStartError, match=GUARDED):
        start()
