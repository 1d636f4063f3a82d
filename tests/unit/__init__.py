"""The quick tier: tests that start no process (conftest.py makes every way of starting one raise)."""
