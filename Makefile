# The two entry points README promises; each does all set-up first (idempotent, re-run only when
# pyproject.toml or the set-up script change).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test bench
run: $(VENV)/.setup-test
	$(PY) benchmarks/bench_generate.py --batch 1 16 --workload mixed --repeat 1

test: $(VENV)/.setup-test
	$(PY) -m pytest

bench: $(VENV)/.setup-test
	$(PY) benchmarks/bench_generate.py

$(VENV)/.setup-test: pyproject.toml scripts/setup.sh
	TRTX_VENV=$(VENV) scripts/setup.sh test
	touch $@
