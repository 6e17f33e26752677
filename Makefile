# Quick start:  make run   (set up, then the dashboard on http://127.0.0.1:5000 with the local device)
#               make test  (set up, then run the whole test suite, browser and PostgreSQL tests included)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)
# test modules run at once, each whole in one worker (its dashboard and finished run made once):
# the suite waits on processes, sockets and browsers much of its time, so two share 2 cores well
TEST_WORKERS ?= 2
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup browser postgres run search test bench

setup: $(VENV)/.installed

# the pinned requirements, then the project itself (editable: imports and tests work from any directory)
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Debian's chromium, which the browser tests drive through Playwright (its own download is not used)
browser:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

# Debian's PostgreSQL, which the database tests start a throw-away server of (tests/processes.py)
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postgresql; }

run: setup
	$(PY) -m webapp

search: setup
	$(PY) -m search_core search --out $(RUN_DIR)

test: setup browser postgres
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: setup
	$(PY) bench/supernet_overhead.py
