# One-command set-up: every target below creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch 2.13.0 is what these machines carry on disk; override elsewhere (e.g. TORCH_SPEC=torch).
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	@# Install torch first and only if missing, so an existing (e.g. CUDA) torch is never replaced.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The main job: DEPO vs GRPO on a tiny model and a built-in task, offline on CPU (a few minutes).
demo: install
	$(BIN)/python -m depo_trl.demo

# The full default test suite (offline, CPU).
test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m benchmarks.replay --quick
	$(BIN)/python -m benchmarks.cold_start --quick

clean:
	rm -rf $(VENV) outputs .pytest_cache
