# Quick start:  make run   (set up, then search on the built-in defaults)
#               make test  (set up, then run the whole test suite)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup run test bench

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

run: setup
	$(PY) -m search_core search --out $(RUN_DIR)

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) bench/supernet_overhead.py
