# Hermes — every target sets itself up: a fresh machine needs only python3, java and the package registries.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
# The default world `make run` simulates and the date it plans (the last simulated day).
USERS ?= 10000
DAYS ?= 30
SEED ?= 7
DS ?= 2026-10-30
# two workers, one test file each at a time (module fixtures stay shared), the longest files first
# (tests/conftest.py: LONG_POLES); most of the suite waits on servers and subprocesses, so two overlap well on
# 2 cores. PYTEST_ARGS=--durations=25 runs it serially.
PYTEST_ARGS ?= --durations=25 -n 2 --dist loadfile --no-loadscope-reorder

.PHONY: run test test-fast ui ui-stop install lock bench bench-nightly bench-triggers bench-streaming bench-delivery bench-import bench-generalization evaluate clean help

help:
	@echo "make run    - install if needed, simulate a marketplace, run hermes_nightly through Airflow, print a summary"
	@echo "make test   - the whole test suite (slow tests included; CI runs exactly this)"
	@echo "make ui     - start Airflow, the MLflow UI, the Configuration Center (and the streaming engine) on 127.0.0.1 over var/; make ui-stop stops them"
	@echo "make lock   - re-resolve constraints.txt from setup.cfg"
	@echo "make bench  - benchmarks under bench/"
	@echo "make bench-nightly - the whole nightly DAG at BENCH_USERS='50000 200000 1000000': time and peak memory per task"
	@echo "make evaluate - Push 1.0 vs Hermes, closed loop, SEEDS='7 11 23' EVAL_DAYS=3 EVAL_USERS=4000"
	@echo "make bench-import - how fast hermes import parses ids and timestamps in the forms exports give them"

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg constraints.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip install --python $(PY) --compile-bytecode -e '.[dev]' -c constraints.txt
	touch $@

lock: $(VENV)/.installed
	$(VENV)/bin/uv pip compile --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  setup.cfg --extra dev -o constraints.txt

run: install
	USERS=$(USERS) DAYS=$(DAYS) SEED=$(SEED) DS=$(DS) bash infra/run.sh

test: install
	bash infra/system-deps.sh
	source infra/env.sh && $(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	source infra/env.sh && $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

ui: install
	bash infra/ui.sh start

ui-stop:
	bash infra/ui.sh stop

bench: install
	source infra/env.sh && $(PY) bench/windows.py --users 1000000 --capacity 70000
	source infra/env.sh && $(PY) bench/delivery.py
	source infra/env.sh && $(PY) bench/score.py --rows 10000000 --kind hgb

BENCH_USERS ?= 50000 200000 1000000
bench-nightly: install
	bash infra/bench-nightly.sh --users $(BENCH_USERS)

SEEDS ?= 7 11 23
EVAL_DAYS ?= 3
EVAL_USERS ?= 4000
evaluate: install
	SEEDS="$(SEEDS)" EVAL_DAYS=$(EVAL_DAYS) EVAL_USERS=$(EVAL_USERS) VARIANT=$(or $(VARIANT),base) COLD_START=$(or $(COLD_START),0) REALTIME=$(or $(REALTIME),0) bash infra/evaluate.sh

bench-triggers: install
	source infra/env.sh && $(PY) bench/triggers.py

STREAM_SPEEDS ?= 1 100 300
STREAM_MINUTES ?= 10
bench-streaming: install
	source infra/env.sh && $(PY) bench/streaming.py --speeds $(STREAM_SPEEDS) --minutes $(STREAM_MINUTES)

GEN_USERS ?= 10000
GEN_SEEDS ?= 7 101
GEN_DAYS ?= 29 30
GEN_VARIANTS ?= base global_dst night_owls price_blind holdout_mix
bench-generalization: install
	source infra/env.sh && $(PY) bench/generalization.py --users $(GEN_USERS) --variants $(GEN_VARIANTS) --seeds $(GEN_SEEDS) --days $(GEN_DAYS)
	source infra/env.sh && $(PY) bench/generalization.py --users $(GEN_USERS) --variants $(GEN_VARIANTS) --seeds $(GEN_SEEDS) --cold-start

bench-delivery: install
	source infra/env.sh && $(PY) bench/delivery.py

bench-import: install
	source infra/env.sh && $(PY) bench/import_parse.py --rows 2000000

clean:
	bash infra/ui.sh stop || true
	rm -rf var
