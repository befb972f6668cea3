# Outlast developer entry points. `make test` and `make demo` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint typecheck unit checks-deploy checks-infra bench clean redis-server chaos chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,pydantic-ai,langgraph,openai-agents]'
	touch $(STAMP)

# redis-server is a system package: the test fixtures start their own instances of it.
redis-server:
	@if ! command -v redis-server >/dev/null 2>&1; then \
		if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing redis-server with apt-get"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
		else \
			echo "redis-server is not installed: install the 'redis-server' package (apt-get install redis-server, brew install redis)"; \
			exit 1; \
		fi; \
	fi

# The web console's browser tests drive Debian's chromium through Playwright; nothing downloads
# a browser build (never `playwright install`).
chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing chromium with apt-get"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "chromium is not installed: install the 'chromium' package (apt-get install chromium)"; \
			exit 1; \
		fi; \
	fi

# lint-imports: the layer contracts of DESIGN.md (pyproject.toml, [tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) redis-server chromium
	$(BIN)/pytest

test: $(STAMP) redis-server chromium
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest --durations=30
	bash scripts/deploy_check.sh
	bash scripts/infra_check.sh

checks-deploy: $(STAMP)
	bash scripts/deploy_check.sh

checks-infra:
	bash scripts/infra_check.sh

demo: $(STAMP)
	@run_id=demo-$$(date +%s); \
	$(BIN)/outlast run examples/research_agent.py:research --input '"durable agents on serverless"' \
		--run-id $$run_id --leg-timeout 3 --evict-rate 0.3 --kill-rate 0.2 --seed 7 && \
	$(BIN)/outlast runs show $$run_id

bench: $(STAMP) redis-server
	$(BIN)/python bench/statestore_bench.py
	$(BIN)/python bench/runtime_bench.py
	$(BIN)/python bench/agent_bench.py
	$(BIN)/python bench/worker_bench.py
	$(BIN)/python bench/ui_bench.py

# The long chaos suite: thousands of runs on SQLite, redis-server (killed and restarted under the
# runs) and DynamoDB+S3 (moto_server), over ten thousand injected faults; prints a summary.
# CHAOS_SEED=N re-runs one seed. The short suite runs in `make test`.
chaos: $(STAMP) redis-server
	CHAOS_LONG=1 CHAOS_SUMMARY=.chaos-summary.txt $(BIN)/pytest tests/chaos -m chaos \
		-o timeout=0 -q -rA

clean:
	rm -rf .outlast .pytest_cache .mypy_cache .ruff_cache .hypothesis .chaos-summary.txt
