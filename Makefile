# Two commands: `make dev` (UI on http://localhost:3000 against the local AIQ sandbox) and `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
SANDBOX_URL := http://127.0.0.1:8765

export DAGSTER_HOME ?= $(CURDIR)/.dagster
# Where the demo POS, the sync database and the services' logs live; ports of the UI and the pull API.
DATA_DIR ?= .data
export AIQ_PIPELINES_DATA_DIR := $(DATA_DIR)
PORT ?= 3000
PULL_PORT ?= 8766
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
# `make dev DROP=1`: sync the demo from a drop folder of CSV files (.data/drop) instead of its database.
ifeq ($(DROP),1)
export POS_DROP_DIR ?= $(abspath $(DATA_DIR))/drop
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

# The sandbox (only when the pipeline points at one), the pull API and `dg dev`, all stopped by one Ctrl-C or SIGTERM
# (aiq_pipelines/devstack.py). The demo runs its automation from the start and looks at the POS every 5 seconds;
# production keeps the defaults (everything stopped until the operator turns it on, a look a minute).
dev: export AUTOMATION_DEFAULT_STATUS ?= running
dev: export SENSOR_INTERVAL_SECONDS ?= 5
dev: export AUDIT_AFTER_HOURS ?= 0.1
dev: install demo-data
	@mkdir -p "$(DATA_DIR)" "$(DAGSTER_HOME)"
	exec $(BIN)/aiq-pipelines dev --port $(PORT) --pull-port $(PULL_PORT) --accounts $(ACCOUNTS) \
	  --sandbox-apply-delay $(SANDBOX_APPLY_DELAY) --sandbox-drop $(SANDBOX_DROP)

# The linter first (a second), then the code location's check as Dagster's own CLI makes it, then the suite.
test: install
	$(BIN)/ruff check .
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg check defs
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
