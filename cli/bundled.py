"""What ships with trtx: the repository it is installed from, and the models, test lists, waive
file and integration tests in it, which commands fall back to when the current folder has none."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "models"
TESTDB = "testlists/test-db"
DURATIONS = "testlists/durations.json"
WAIVES = "waives/waives.txt"
TEST_ROOT = "tests/integration"


def default_path(relative: str) -> str:
    """A path under the current directory when it exists there, else the one bundled with trtx."""
    return relative if Path(relative).exists() else str(REPO_ROOT / relative)
