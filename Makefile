# opencbr — `make help` lists the targets.
PYTHON ?= python3
# bash: process substitution filters pip's stderr while its stdout stays on the terminal
# (so pip shows its progress bars).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help run test lint fmt typecheck unit bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# Two installs: `make run` needs only the service; `make test` adds the test tools
# (official SDKs, openstack CLI, ruff, mypy: several hundred MB). Each is redone when
# pyproject.toml changes (its checksum names the stamp).
RUN_STAMP := $(VENV)/.run-$(shell cksum pyproject.toml | cut -d' ' -f1)
TEST_STAMP := $(VENV)/.test-$(shell cksum pyproject.toml | cut -d' ' -f1)
PIP := $(BIN)/python -m pip --disable-pip-version-check

$(BIN)/python:
	@echo "creating the virtualenv $(VENV)"
	@$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing opencbr and what the service needs into $(VENV) (from PyPI; about 150 MB in .venv)"
	@$(PIP) install -e . 2> >(grep -v '^WARNING: Location' >&2)
	@$(BIN)/python -c 'import opencbr, fastapi, uvicorn' || (echo "installation failed" && exit 1)
	@rm -f $(VENV)/.run-* && touch $@

$(TEST_STAMP): $(RUN_STAMP)
	@echo "installing the test tools into $(VENV) (official SDKs, openstack CLI, moto, SeaweedFS, Redis client, ruff, mypy; about 680 MB more)"
	@$(PIP) install -q -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
	@$(BIN)/python -c 'import opencbr, fastapi, pytest' || (echo "installation failed" && exit 1)
	@rm -f $(VENV)/.test-* && touch $@

run: $(RUN_STAMP)  ## install what the service needs into .venv and start it on its embedded defaults
	$(BIN)/opencbr serve

# Two pytest-xdist workers, each test module in one of them (its module-scoped servers
# start once): the end-to-end tests mostly wait on the processes they start. Each worker
# has its own PostgreSQL databases, Redis database, SeaweedFS and free ports.
TEST_WORKERS ?= 2
test: $(TEST_STAMP) lint typecheck  ## install test dependencies, lint, type-check and run every test
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

unit: $(TEST_STAMP)  ## only the fast tests (no PostgreSQL, no subprocesses)
	$(BIN)/pytest -q -m "not slow" tests/unit tests/contract

lint: $(TEST_STAMP)  ## ruff lint + format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(TEST_STAMP)  ## mypy --strict on the package
	$(BIN)/mypy

fmt: $(TEST_STAMP)  ## format and autofix
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(TEST_STAMP)  ## benchmark against restic, borg and cp, then S3 (see bench/README.md)
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[test,bench]' 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.s3 $(BENCH_S3_ARGS)

clean:  ## remove the virtualenv and caches (not the data directory)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
