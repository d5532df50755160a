# The two commands of the README: `make demo` and `make test`. Both set up a fresh machine first.
SHELL := /bin/bash
VENV ?= .venv
RUN_DIR ?= runs/demo

.PHONY: setup demo test test-fast cluster-up cluster-down bench clean

setup:
	bash scripts/setup.sh

# All three stages on the tiny CPU preset (SFT -> math DAPO -> joint six-domain DAPO), then a report.
# Rerunning resumes (or finds every stage final); `make clean` starts over.
demo: setup
	$(VENV)/bin/mathfirst-hpc run --run-dir $(RUN_DIR)
	$(VENV)/bin/mathfirst-hpc status $(RUN_DIR)
	$(VENV)/bin/mathfirst-hpc report $(RUN_DIR)

# Every test, including the ones on a real local Slurm cluster, which this target starts and stops.
test: setup
	bash scripts/run_tests.sh

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slurm and not slow"

cluster-up:
	bash slurm/local_cluster.sh up

cluster-down:
	bash slurm/local_cluster.sh down

clean:
	rm -rf runs .pytest_cache
