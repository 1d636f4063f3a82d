"""Tests that start processes: `trtx` commands run as a user runs them, `trtx run` with its pytest
children, and real multi-rank jobs under mpirun (marked `multirank`)."""
