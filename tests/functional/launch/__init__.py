"""The launcher (cli/launch) on real jobs: mpirun, torchrun, and the rank entry program."""
