# Two commands: `make dev` (UI on http://localhost:3000 against the local AIQ sandbox) and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
SANDBOX_URL := http://127.0.0.1:8765

export DAGSTER_HOME := $(CURDIR)/.dagster
# Local development talks to the sandbox with a throwaway key; set these in the environment (or .env) for AIQ's lab.
export AIQ_BASE_URL ?= $(SANDBOX_URL)
export AIQ_API_KEY ?= sandbox-dev-key
export AIQ_UID ?= sandbox
# The pull API's key for local development; production sets its own (see the README).
export PULL_API_KEYS ?= pull-dev-key
# `make dev ACCOUNTS=2`: the demo's stores dealt out to two AIQ accounts, each a sandbox of its own (8765, 8775, ...).
ACCOUNTS ?= 1
# The sandbox behaves like AIQ: writes show a minute after they are accepted and 2% of personas never land, so the
# delivery audit (which reads back after AUDIT_AFTER_HOURS, 6 minutes in `make dev`) has something to find.
SANDBOX_APPLY_DELAY ?= 60
SANDBOX_DROP ?= 0.02
DEV_AUDIT_AFTER_HOURS ?= 0.1
# `make dev DROP=1`: sync the demo from a drop folder of CSV files (.data/drop) instead of its database.
ifeq ($(DROP),1)
export POS_DROP_DIR ?= $(CURDIR)/.data/drop
endif

.PHONY: dev test install demo-data sandbox clean bench bench-pull bench-audit

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

# With a drop folder, two weeks of the demo as CSV files (the folder must exist before the settings are read).
demo-data: install
	@$(if $(POS_DROP_DIR),mkdir -p "$(POS_DROP_DIR)")
	$(BIN)/aiq-pipelines demo-data --if-absent $(if $(filter-out 1,$(ACCOUNTS)),--accounts $(ACCOUNTS)) \
	  $(if $(POS_DROP_DIR),--csv "$(POS_DROP_DIR)" --days 14)

# Starts the sandbox (only when the pipeline points at it) and the pull API next to `dagster dev`; all stop with Ctrl-C.
dev: install demo-data
	@mkdir -p .data $(DAGSTER_HOME); \
	pids=""; \
	if [ "$(ACCOUNTS)" != 1 ]; then export AIQ_ACCOUNTS_FILE="$(CURDIR)/.data/aiq_accounts.yaml"; fi; \
	if [ "$$AIQ_BASE_URL" = "$(SANDBOX_URL)" ]; then \
	  $(BIN)/aiq-sandbox --port 8765 --db .data/sandbox.db --apply-delay $(SANDBOX_APPLY_DELAY) \
	    --drop-personas $(SANDBOX_DROP) >> .data/sandbox.log 2>&1 & pids="$$pids $$!"; \
	  echo "AIQ sandbox on $(SANDBOX_URL) (log: .data/sandbox.log)"; \
	  for k in $$(seq 2 $(ACCOUNTS)); do \
	    port=$$((8765 + 10 * (k - 1))); export AIQ_API_KEY_$$k="sandbox-dev-key-$$k"; \
	    AIQ_API_KEY="sandbox-dev-key-$$k" $(BIN)/aiq-sandbox --port $$port --uid sandbox-$$k \
	      --db .data/sandbox-$$k.db --apply-delay $(SANDBOX_APPLY_DELAY) --drop-personas $(SANDBOX_DROP) \
	      >> .data/sandbox-$$k.log 2>&1 & pids="$$pids $$!"; \
	    echo "AIQ sandbox of account_$$k on http://127.0.0.1:$$port (log: .data/sandbox-$$k.log)"; \
	  done; \
	fi; \
	$(BIN)/aiq-pipelines pull-api --port 8766 >> .data/pull-api.log 2>&1 & pids="$$pids $$!"; \
	echo "pull API on http://127.0.0.1:8766 (docs: /docs, key: PULL_API_KEYS, log: .data/pull-api.log)"; \
	trap 'kill $$pids 2>/dev/null' EXIT; \
	AUDIT_AFTER_HOURS="$${AUDIT_AFTER_HOURS:-$(DEV_AUDIT_AFTER_HOURS)}" $(BIN)/dagster dev -w workspace.yaml -p 3000

# The linter first (a second), then the suite.
test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

# Benchmarks (not part of `make test`): prints one table and writes bench/RESULTS.md; BENCH_ARGS="--sizes 10k" etc.
bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-pull: install
	$(BIN)/python -m bench.pull $(BENCH_ARGS)

bench-audit: install
	$(BIN)/python -m bench.audit $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .data .pytest_cache
