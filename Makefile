# The two commands of the README: `make demo` and `make test`. Both set up a fresh machine first.
SHELL := /bin/bash
VENV ?= .venv
RUN_DIR ?= runs/demo

.PHONY: setup demo study test test-fast cluster-up cluster-down bench clean

setup:
	bash scripts/setup.sh

# All three stages on the tiny CPU preset (SFT -> math DAPO -> joint DAPO), the held-out table (one row per
# domain, one column per stage), then a report. Rerunning resumes (or finds every stage final and the table
# cached); `make clean` starts over.
demo: setup
	$(VENV)/bin/mathfirst-hpc run --run-dir $(RUN_DIR)
	$(VENV)/bin/mathfirst-hpc status $(RUN_DIR)
	$(VENV)/bin/mathfirst-hpc eval --run-dir $(RUN_DIR) --heldout > /dev/null
	$(VENV)/bin/mathfirst-hpc report $(RUN_DIR)
	$(VENV)/bin/mathfirst-hpc eval --run-dir $(RUN_DIR) --heldout   # cached: prints the table

# The ablation: curriculum vs "no math RL" (stage 3 straight after SFT, same RL iterations), 3 seeds.
study: setup
	$(VENV)/bin/mathfirst-hpc study --dir runs/study --seeds 0,1,2 --no-progress
	$(VENV)/bin/mathfirst-hpc report runs/study

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
