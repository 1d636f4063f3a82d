import sys
from pathlib import Path

# tests/ is not a package: make its helpers (checkpoints.py) importable from every test folder.
sys.path.insert(0, str(Path(__file__).parent))
