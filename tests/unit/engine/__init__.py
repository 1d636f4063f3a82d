"""The engine in this process, on one rank: none of these imports trtx.cli (test_imports.py checks)."""
