"""The engine on real CPU ranks (mpirun, gloo) through the harness's launcher: tensor, pipeline and
attention-DP parallelism, the desync detector, warmup agreement and decode graphs across ranks."""
