"""Multi-rank jobs. launcher (Launch: ranks under mpirun, torchrun or srun, their logs, stacks at a
hang, teardown), rendezvous (the TCPStore the launcher serves for the whole job), rank_entry (the
standard-library-only program each rank runs first, by path) and report (a finished job for the
console)."""
