import sys
from pathlib import Path

# `trtx run` starts pytest with this folder as its root: make tests/ helpers (ranks.py) importable.
sys.path.insert(0, str(Path(__file__).parents[1]))
