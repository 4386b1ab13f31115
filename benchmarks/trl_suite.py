"""TRL's own GRPO test suite, run against GRPOTrainer and against DEPOTrainer, side by side.

A drop-in claim is checked with the original's own tests. This script takes TRL's ``tests/`` folder (from a TRL
checkout, or ``git show`` out of a bare clone), builds local stand-ins for the hub models and the dataset those
tests load (tiny models built in code, saved under the repository ids the tests name, so nothing touches the hub),
and runs ``tests/test_grpo_trainer.py`` three times in the same environment:

1. ``grpo``: TRL's ``GRPOConfig`` / ``GRPOTrainer`` (the reference: what passes here is what this environment can
   run at all; GPU, vLLM, liger and hub-only model types fail or skip for both).
2. ``depo-filtering``: ``GRPOConfig`` / ``GRPOTrainer`` replaced by ``DEPOConfig`` (warm-up 0, candidate multiplier
   2, so DEPO filters from the first step) / ``DEPOTrainer``.
3. ``depo-defaults``: the same with DEPO's defaults (10 warm-up steps, multiplier 4).

Activation checkpointing is switched off in all three (it only costs time on tiny CPU models). TRL's tool and
environment tests need ``jmespath`` (``pip install jmespath``; they skip without it), and those that train patch
``generate`` to return hard-coded Qwen3 token ids, which the stand-ins' character tokenizer cannot decode: they fail
for ``GRPOTrainer`` too here, and ``tests/trainer/test_grpo_scenarios.py`` runs DEPO's own versions of them. The
report lists every test that passes with ``GRPOTrainer`` and fails with ``DEPOTrainer``, with its error, and writes JSON plus a
section of ``docs/benchmarks.md``. TRL's test file is read and run, never copied into this repository.

Usage::

    python -m benchmarks.trl_suite --trl-tests /path/to/trl/tests
    python -m benchmarks.trl_suite --trl-git /path/to/trl.git          # a (bare) clone: files via git show
    python -m benchmarks.trl_suite --trl-git ... -k "reward_funcs"     # a subset, for a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks import common

TRL_FILES = ("__init__.py", "conftest.py", "test_grpo_trainer.py", "testing_constants.py", "testing_utils.py")
VARIANTS = {
    "grpo": (
        "from dataclasses import dataclass\n\nfrom trl import GRPOConfig as _GRPOConfig, GRPOTrainer\n\n\n"
        "@dataclass\nclass GRPOConfig(_GRPOConfig):\n    activation_checkpointing: bool = False\n"
    ),
    "depo-filtering": (
        "from dataclasses import dataclass\n\nfrom depo_trl import DEPOConfig, DEPOTrainer\n\n\n"
        "@dataclass\nclass GRPOConfig(DEPOConfig):\n    depo_warmup_steps: int = 0\n"
        "    depo_candidate_multiplier: int = 2\n    activation_checkpointing: bool = False\n\n\n"
        "GRPOTrainer = DEPOTrainer\n"
    ),
    "depo-defaults": (
        "from dataclasses import dataclass\n\nfrom depo_trl import DEPOConfig, DEPOTrainer\n\n\n"
        "@dataclass\nclass GRPOConfig(DEPOConfig):\n    activation_checkpointing: bool = False\n\n\n"
        "GRPOTrainer = DEPOTrainer\n"
    ),
}
IMPORT_LINE = "from trl import GRPOConfig, GRPOTrainer"
# The Zen of Python lines of TRL's "trl-internal-testing/zen" dataset (17 train, 2 test), public domain.
ZEN_TRAIN = [
    "Beautiful is better than", "Explicit is", "Simple is better", "Complex", "Flat is better than",
    "Sparse is better", "Readability", "Special cases aren't special", "Although practicality beats",
    "Errors should never", "Unless explicitly", "In the face of ambiguity, refuse", "There should be one",
    "Although that way may not be", "Now is better than", "Never is often better than", "If the implementation",
]
ZEN_TEST = ["Namespaces are one", "Although never is"]


# ----------------------------------------------------------------------------- inputs
def read_trl_tests(trl_tests: Path | None, trl_git: Path | None, dest: Path) -> str:
    """Copy TRL's test files into ``dest`` (a scratch folder); return where they came from."""
    dest.mkdir(parents=True, exist_ok=True)
    if trl_tests is not None:
        for name in TRL_FILES:
            shutil.copy(trl_tests / name, dest / name)
        bridge_version_gap(dest / "testing_utils.py")
        return str(trl_tests)
    commit = subprocess.run(["git", "--git-dir", str(trl_git), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    for name in TRL_FILES:
        text = subprocess.run(["git", "--git-dir", str(trl_git), "show", f"HEAD:tests/{name}"], capture_output=True,
                              text=True, check=True).stdout
        (dest / name).write_text(text)
    bridge_version_gap(dest / "testing_utils.py")
    return f"{trl_git} @ {commit[:12]}"


def bridge_version_gap(testing_utils: Path) -> list[str]:
    """TRL's newest ``testing_utils.py`` may import ``is_<pkg>_available`` helpers the installed release lacks:
    define those (``importlib.util.find_spec("<pkg>")``) instead of importing them. Returns the names bridged."""
    import re

    import importlib

    import_utils = importlib.import_module("trl.import_utils")
    text = testing_utils.read_text()
    block = re.search(r"from trl\.import_utils import \((.*?)\)", text, re.DOTALL)
    if block is None:
        return []
    names = [n.strip() for n in block.group(1).replace("\n", ",").split(",") if n.strip()]
    missing = [n for n in names if not hasattr(import_utils, n)]
    if not missing:
        return []
    kept = ",\n    ".join(n for n in names if n not in missing)
    shims = "".join(
        f"\n\ndef {n}():  # not in the installed trl: bridged by benchmarks/trl_suite.py\n"
        f"    return importlib.util.find_spec({n.removeprefix('is_').removesuffix('_available')!r}) is not None\n"
        for n in missing)
    text = text.replace(block.group(0), f"import importlib.util\nfrom trl.import_utils import (\n    {kept},\n)"
                        + shims, 1)
    testing_utils.write_text(text)
    return missing


def build_standins(root: Path) -> list[str]:
    """Tiny models and the zen dataset, saved under the hub ids TRL's GRPO tests load (relative to ``root``)."""
    import torch
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig, Qwen2Config,
                              Qwen3Config, Qwen3MoeConfig)

    from depo_trl.tiny import build_tokenizer, build_tool_tokenizer

    base = root / "trl-internal-testing"
    zen = base / "zen"
    configs = []
    for name, fmt in (("standard_prompt_only", lambda p: p),
                      ("conversational_prompt_only", lambda p: [{"role": "user", "content": p}])):
        (zen / name).mkdir(parents=True, exist_ok=True)
        for split, rows in (("train", ZEN_TRAIN), ("test", ZEN_TEST)):
            (zen / name / f"{split}.jsonl").write_text("".join(json.dumps({"prompt": fmt(p)}) + "\n" for p in rows))
        configs.append(f"- config_name: {name}\n  data_files:\n  - split: train\n    path: {name}/train.jsonl\n"
                       f"  - split: test\n    path: {name}/test.jsonl\n")
    (zen / "README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n")

    def small(cfg_cls, tok, **kw):
        return cfg_cls(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None, **kw)

    built = []

    def save(name, model, tok):
        model.save_pretrained(base / name)
        tok.save_pretrained(base / name)
        built.append(f"trl-internal-testing/{name}")

    torch.manual_seed(0)
    chatml, tools = build_tokenizer(), build_tool_tokenizer()
    save("tiny-Qwen2ForCausalLM-2.5",
         AutoModelForCausalLM.from_config(small(Qwen2Config, chatml, tie_word_embeddings=True)), chatml)
    save("tiny-Qwen2ForSequenceClassification-2.5",
         AutoModelForSequenceClassification.from_config(small(Qwen2Config, chatml, num_labels=1)), chatml)
    save("tiny-Qwen3ForCausalLM",
         AutoModelForCausalLM.from_config(small(Qwen3Config, tools, tie_word_embeddings=True, head_dim=8)), tools)
    save("tiny-Qwen3MoeForCausalLM", AutoModelForCausalLM.from_config(
        small(Qwen3MoeConfig, tools, head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)),
        tools)
    llama_tok = build_tokenizer()
    llama_tok.add_tokens(["<|finetune_right_pad_id|>"])
    save("tiny-LlamaForSequenceClassification-3.2",
         AutoModelForSequenceClassification.from_config(small(LlamaConfig, llama_tok, num_labels=1)), llama_tok)
    return built


# ----------------------------------------------------------------------------- runs
def write_variant(tests: Path, variant: str) -> Path:
    """``tests/test_grpo_trainer_<variant>.py``: TRL's file with its trainer import pointed at the variant's shim."""
    module = "shim_" + variant.replace("-", "_")
    (tests.parent / f"{module}.py").write_text(f'"""GRPOConfig / GRPOTrainer for the {variant} run."""\n'
                                               + VARIANTS[variant])
    source = (tests / "test_grpo_trainer.py").read_text()
    if IMPORT_LINE not in source:
        raise SystemExit(f"TRL's test_grpo_trainer.py no longer has the line {IMPORT_LINE!r}; update this script.")
    path = tests / f"test_grpo_trainer_{module}.py"
    path.write_text(source.replace(IMPORT_LINE, f"from {module} import GRPOConfig, GRPOTrainer", 1))
    return path


def run_variant(work: Path, test_file: Path, keyword: str | None, timeout: int) -> tuple[dict, float, str]:
    xml = work / f"{test_file.stem}.xml"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(work), str(common.REPO_ROOT)]))
    (work / "conftest.py").write_text("import torch\n\ntorch.set_num_threads(1)\n")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file.relative_to(work)),
           f"--junitxml={xml}"] + (["-k", keyword] if keyword else [])
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    return parse_junit(xml), seconds, summary


def parse_junit(xml: Path) -> dict[str, dict]:
    """test id -> {"outcome": passed | failed | skipped, "message": first line of the failure}."""
    results = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", (child.get("message") or "").strip().splitlines()[0][:300] if (
                    child.get("message") or "").strip() else child.tag
            elif child.tag == "skipped" and outcome == "passed":
                outcome = "skipped"
        results[test_id] = {"outcome": outcome, "message": message}
    return results


def compare(reference: dict, other: dict) -> list[dict]:
    """Tests that pass under the reference and do not pass under ``other``."""
    return [{"test": t, "outcome": other.get(t, {"outcome": "missing"})["outcome"],
             "message": other.get(t, {}).get("message", "")}
            for t, r in sorted(reference.items()) if r["outcome"] == "passed"
            and other.get(t, {}).get("outcome") != "passed"]


def counts(results: dict) -> dict:
    return {k: sum(r["outcome"] == k for r in results.values()) for k in ("passed", "failed", "skipped")}


# ----------------------------------------------------------------------------- report
def render(payload: dict) -> str:
    lines = ["| run | passed | failed | skipped | seconds | passes with GRPOTrainer, not with this |",
             "|---|---|---|---|---|---|"]
    for name, run in payload["runs"].items():
        lost = "-" if name == "grpo" else str(len(run["lost"]))
        c = run["counts"]
        lines.append(f"| {name} | {c['passed']} | {c['failed']} | {c['skipped']} | {run['seconds']:.0f} | {lost} |")
    for name, run in payload["runs"].items():
        for item in run.get("lost", []):
            lines.append(f"\n- {name}: `{item['test']}` ({item['outcome']}): {item['message']}")
    return "\n".join(lines)


def docs_body(payload: dict, table: str) -> str:
    reference = payload["runs"]["grpo"]["counts"]
    return "\n".join([
        "## TRL's own GRPO suite against DEPOTrainer",
        "",
        f"TRL's `tests/test_grpo_trainer.py` ({payload['source']}), run here against the installed trl "
        f"{payload['trl_version']} with local stand-ins for the hub models and dataset it loads "
        f"({', '.join('`' + m + '`' for m in payload['standins'])}, and `trl-internal-testing/zen`), once per run "
        "below in the same environment. `depo-filtering`: DEPOConfig with warm-up 0 and candidate multiplier 2 "
        "(DEPO filters from the first step); `depo-defaults`: DEPO's defaults. Tests that fail for `GRPOTrainer` "
        f"too ({reference['failed']} here) need what this machine lacks (a GPU, vLLM, liger, bitsandbytes, the "
        "hub models without a stand-in, vision models) or differ between TRL's newest test file and the installed "
        "release; they say nothing about DEPO. Among them are TRL's tool and environment training tests (run with `jmespath` "
        "installed, which they need): they patch "
        "`generate` to return hard-coded Qwen3 token ids that the stand-ins' tokenizer cannot decode (no Qwen "
        "tokenizer is available offline); `tests/trainer/test_grpo_scenarios.py` runs DEPO's own versions of those "
        "scenarios, with `GRPOTrainer` and `DEPOTrainer`.",
        "",
        table,
        "",
        "Why the one test listed above differs: it asserts that `GRPOTrainer`'s generation batches are the dataset's "
        "first prompts in order, and GRPO's count of steps per epoch. Under DEPO filtering the batch is DEPO's "
        "pick, and one epoch is one pass of the candidate walk (K x fewer rounds than GRPO's epoch; README, "
        "\"How it works\", Epochs), so neither can hold by design; with `max_steps` set, step counts agree.",
        "",
        f"Command: `{payload['command']}`. Machine: {payload['machine']}.",
    ])


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.trl_suite", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required="--from-json" not in (argv or []))
    src.add_argument("--trl-tests", type=Path, help="TRL's tests/ folder (a checkout)")
    src.add_argument("--trl-git", type=Path, help="a (bare) git clone of TRL; its HEAD's tests/ are read")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("-k", dest="keyword", default=None, help="pytest -k expression (a subset; implies --no-docs)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per run")
    ap.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR)
    ap.add_argument("--docs", type=Path, default=common.DOCS_PATH)
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--from-json", type=Path, default=None, help="re-render the docs section of a finished run")
    args = ap.parse_args(argv)
    if "grpo" not in args.variants:
        args.variants = ["grpo"] + args.variants  # the reference is always run
    return args


def main(argv=None) -> dict:
    import trl

    argv_list = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv_list)
    if args.from_json is not None:
        payload = json.loads(args.from_json.read_text())
        table = render(payload)
        print(table)
        common.update_docs_section("trl_suite", docs_body(payload, table), args.docs)
        return payload
    work = args.work or Path(tempfile.mkdtemp(prefix="trl-suite-"))
    source = read_trl_tests(args.trl_tests, args.trl_git, work / "tests")
    standins = build_standins(work)
    runs = {}
    for variant in args.variants:
        results, seconds, summary = run_variant(work, write_variant(work / "tests", variant), args.keyword,
                                                args.timeout)
        runs[variant] = {"counts": counts(results), "seconds": seconds, "summary": summary, "results": results}
        print(f"{variant}: {summary} ({seconds:.0f} s)", flush=True)
    for name, run in runs.items():
        if name != "grpo":
            run["lost"] = compare(runs["grpo"]["results"], run["results"])
    payload = {
        "source": source, "trl_version": trl.__version__, "standins": standins, "keyword": args.keyword,
        "runs": runs, "command": common.command_line("benchmarks.trl_suite", argv_list),
        "machine": common.machine_line(),
    }
    table = render(payload)
    print(table)
    suffix = "_subset" if args.keyword else ""
    args.results_dir.mkdir(parents=True, exist_ok=True)
    common.write_json(args.results_dir / f"trl_suite{suffix}.json", payload)
    if not (args.no_docs or args.keyword):
        common.update_docs_section("trl_suite", docs_body(payload, table), args.docs)
    return payload


if __name__ == "__main__":
    main()
