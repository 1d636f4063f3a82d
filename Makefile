# The two entry points README promises; each does all set-up first (idempotent, re-run only when
# pyproject.toml or the set-up script change).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test bench bench-mtp
run: $(VENV)/.setup-test
	$(VENV)/bin/trtx eval --model tiny-arith --mtp-nextn 2

test: $(VENV)/.setup-test
	$(PY) -m pytest

bench: $(VENV)/.setup-test
	$(PY) benchmarks/bench_generate.py

bench-mtp: $(VENV)/.setup-test
	$(PY) benchmarks/bench_mtp.py

$(VENV)/.setup-test: pyproject.toml scripts/setup.sh
	TRTX_VENV=$(VENV) scripts/setup.sh test
	touch $@
