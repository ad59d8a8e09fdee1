# From a fresh clone:  make run   (the main job)   make test   (the test suite)
# Both create .venv when it is missing and install efbench into it (editable) when it is not
# installed or pyproject.toml has changed since. ARGS go to efbench / pytest:
#   make run ARGS="method=ec_gd compressor=topk"     make test ARGS="tests/test_cli.py -x"
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test

run: $(VENV)/.installed
	$(BIN)/efbench $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/pytest $(ARGS)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# efbench alone for `make run`; the test extra (pytest, ruff, hypothesis, submitit) for `make test`,
# which serves `make run` too
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed
