# eexit: `make run` and `make test` set up whatever is missing first.
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.eexit-setup-stamp
export DAGSTER_HOME := $(CURDIR)/.dagster
# `dagster dev` hands its children --workspace; an inherited DAGSTER_MODULE_NAME makes them
# exit silently ("Invalid set of CLI arguments"), so it must never reach them.
unexport DAGSTER_MODULE_NAME

.PHONY: setup run test test-fast bench ui lock clean-results

# pytest-xdist: one worker per core (tests/conftest.py keeps the modules that share state
# outside their temporary folders on one worker each); `make lock` tests the same way
export PYTEST_PARALLEL := -n auto --dist loadgroup

$(STAMP): pyproject.toml scripts/setup.sh requirements.lock requirements-dvc.lock
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

## the main job: every asset on the embedded default, then the EAS table
run: $(STAMP)
	$(PY) -m pipelines.run

## the whole test suite (slow tests included, as in CI); the ten slowest tests are listed,
## so a log shows where the 10-minute budget goes
test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_PARALLEL) --durations=10

## the suite without the slow tests
test-fast: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_PARALLEL) -m "not slow"

## re-resolve the newest allowed versions, run the tests, write requirements.lock only if they pass
lock: $(STAMP)
	bash scripts/lock.sh

bench: $(STAMP)
	$(PY) -m benchmarks.run

## the Dagster UI on http://127.0.0.1:3000 (other host or port: make ui UI_FLAGS="-p 3001")
UI_FLAGS ?=
ui: $(STAMP)
	$(VENV)/bin/dagster dev $(UI_FLAGS)

clean-results:
	rm -rf data/artifacts data/results.duckdb data/reports
