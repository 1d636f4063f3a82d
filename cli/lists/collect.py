"""Which tests exist under a test root: pytest's own collection, run in a subprocess so that test
modules (and whatever they import) never load into the CLI process."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..errors import UserError, closest_names
from .testline import TestRef


def collect_ids(test_root: str | Path) -> set[str]:
    root = Path(test_root).resolve()
    if not root.is_dir():
        raise UserError("test root does not exist", str(root))
    # rootdir and confcutdir pinned to the test root: ids are relative to it, and no conftest.py
    # from the folders above it (another suite's) takes part.
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
           f"--rootdir={root}", f"--confcutdir={root}", str(root)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=600)
    if res.returncode not in (0, 5):                        # 5: nothing collected
        tail = "; ".join((res.stdout + res.stderr).strip().splitlines()[-3:])
        raise UserError(f"pytest could not collect the tests: {tail}", str(root))
    return {line.strip() for line in res.stdout.splitlines() if "::" in line and not line.startswith(" ")}


class KnownTests:
    """Answers 'does this test-db or waive entry name an existing test?'."""

    def __init__(self, test_root: str | Path, ids: set[str] | None = None):
        self.root = Path(test_root)
        self.ids = collect_ids(test_root) if ids is None else ids
        # A class or module id (`file.py::TestX`), or a parametrized function's (`file.py::test_t` of
        # `file.py::test_t[a]`), names a test when some collected test is under it.
        self._prefixes = {i.rsplit("::", k)[0] for i in self.ids for k in range(1, i.count("::") + 1)}
        self._prefixes |= {i.split("[", 1)[0] for i in self.ids if i.endswith("]")}

    def __call__(self, ref: TestRef) -> bool:
        tid = ref.test_id
        if "::" in tid:
            return tid in self.ids or tid in self._prefixes
        return (self.root / tid).exists()

    def closest(self, ref: TestRef) -> list[str]:
        return closest_names(ref.test_id, sorted(self.ids), cutoff=0.3)
