# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make run    set up .venv/ and run the whole default DAG on the embedded demo corpus
#   make test   set up .venv/ and run the linter and the test suite
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export KEDRO_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false
# OpenMP threads that spin while waiting slow torch down several times on small, busy
# machines; passive waiting costs nothing measurable when the cores are free.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install run test lint format bench viz serve system-deps foundation-corpus

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and alone, pinned: a CPU wheel on CPU machines, a CUDA one on Linux GPUs.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test,tracking]"
	@touch $@

run: $(STAMP)
	$(BIN)/kedro run $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

format: $(STAMP)
	$(BIN)/ruff check --fix src tests scripts
	$(BIN)/ruff format src tests scripts

test: lint system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# System packages the tests drive: Debian's Chromium and its driver (the kedro-viz browser
# test). Installed when missing and root or passwordless sudo can; otherwise a warning, and
# that test skips, except under CI (env CI set), where it fails (tests/test_viz_browser.py).
CHROMIUM_PACKAGES := chromium chromium-driver
system-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else sudo=none; fi; \
	if [ "$$sudo" = none ] || ! command -v apt-get >/dev/null; then \
	  echo "system-deps: cannot install $(CHROMIUM_PACKAGES) (needs apt-get and root or sudo):" \
	       "the kedro-viz browser test will be skipped (and fail under CI)"; exit 0; fi; \
	echo "system-deps: apt-get install $(CHROMIUM_PACKAGES)"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq \
	  $(CHROMIUM_PACKAGES) >/dev/null || echo "system-deps: apt-get failed (see above)"

# The many-voiced speech the HuBERT stand-in fine-tunes on (`kedro run --pipelines foundation`):
# generated, not shipped. Needs espeak-ng and the mbrola voices (README "Foundation stand-ins").
foundation-corpus: $(STAMP)
	$(BIN)/python scripts/make_foundation_corpus.py --workers $(or $(WORKERS),2)

bench: $(STAMP)
	$(BIN)/python scripts/bench.py $(ARGS)

viz: $(STAMP)
	$(BIN)/kedro viz run $(ARGS)

# The "speak to it" page on http://127.0.0.1:7860 (needs a default `kedro run` first):
# record or upload a description, get the picture. ARGS: --env, --port, --load-versions.
serve: $(STAMP)
	$(BIN)/python -m wavy_pipeline.speak $(ARGS)
