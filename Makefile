# The two entry points README promises; each does all set-up first (idempotent, re-run only when
# pyproject.toml or the set-up script change).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test unit functional bench bench-mtp bench-parallel bench-graphs bench-gpu bench-gate
# The main job: the l0_cpu test list (accuracy and acceptance gates on CPU ranks).
run: $(VENV)/.setup-test
	$(VENV)/bin/trtx run l0_cpu --results results/l0_cpu

# What CI runs: every tier, quickest first: the unit tests, the functional tests, then the l0_cpu list.
test: $(VENV)/.setup-test unit functional run

# The quick tier: tests that start no process.
unit: $(VENV)/.setup-test
	$(PY) -m pytest tests/unit

# Tests that start processes: trtx commands, pytest children, mpirun jobs (marked multirank).
functional: $(VENV)/.setup-test
	$(PY) -m pytest tests/functional

bench: $(VENV)/.setup-test
	$(PY) benchmarks/bench_generate.py

bench-mtp: $(VENV)/.setup-test
	$(PY) benchmarks/bench_mtp.py

bench-parallel: $(VENV)/.setup-test
	$(PY) benchmarks/bench_parallel.py

bench-graphs: $(VENV)/.setup-test
	$(PY) benchmarks/bench_graphs.py

# One GPU against transformers and the memory-bound limit (issue 16); tiny sizes without CUDA.
bench-gpu: $(VENV)/.setup-test
	$(PY) benchmarks/bench_gpu.py $(BENCH_GPU_ARGS)

# The accuracy gate's false-red and detection rates, measured (docs/eval.md; about 10 minutes on one thread).
bench-gate: $(VENV)/.setup-test
	$(PY) benchmarks/bench_gate.py

$(VENV)/.setup-test: pyproject.toml scripts/setup.sh
	TRTX_VENV=$(VENV) scripts/setup.sh test
	touch $@
