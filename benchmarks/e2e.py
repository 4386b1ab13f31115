"""End to end: where DEPO saves compute, across difficulty regimes, with seeds, through the real trainers on CPU.

    python -m benchmarks.e2e [--quick] [--regimes balanced,hard,easy] [--methods GRPO,DS,...] [--seeds 0,1,2]
    python -m benchmarks.e2e --method "DEPO-w3=DEPO:depo_warmup_steps=3" ...   # an extra (ablation) method
    python -m benchmarks.e2e --render benchmarks/results/e2e.json           # redraw table/plots/docs only

A tiny char-level Qwen2 (built in code, seeded) is warm-started once by a short supervised stage on string
reversal (``benchmarks/e2e_task.py``: the length is the difficulty knob; lengths split into solved, frontier and
beyond-the-model classes). From that one checkpoint, for every **regime** (training pool: ``balanced``, ``hard``
= mostly beyond the model, ``easy`` = mostly solved) and every training **seed**, every **method** trains for the
same number of optimizer steps with the same batch (U prompts x G completions), learning rate and reward (exact
match, binary). Methods (``METHODS``; trainers in ``benchmarks/e2e_methods.py``):

- ``GRPO``: ``trl.GRPOTrainer`` as is (with a ledger that counts what it generates);
- ``DS``: DAPO dynamic sampling (drop all-equal groups after generating them, refill until the batch is full);
- ``GRESO``: GRESO's probabilistic pre-rollout skip rule on zero-variance streaks;
- ``MoPPS``: ``DEPOTrainer`` with a history-only per-prompt Beta posterior (estimator ``beta``, features
  ``history``) and Thompson selection, no warm-up, no extra exploration: MoPPS through the same engine;
- ``DEPO``: ``DEPOTrainer`` with its defaults;
- ``DEPO-best``: ``DEPOTrainer`` with ``BEST_DEPO`` (the best configuration of the predictor study);
- ``DEPO-answer-K8``: DEPO's defaults plus the ``answer_likelihood`` feature group (the policy's teacher-forced
  probability of the reference answer, from the embedding prefill) and 8 candidates scored per rollout;
- ``DEPO-answer-K8-w2``: the same with 2 warm-up steps instead of 10 (the answer likelihood is informative from
  the first round, so a long uniform warm-up only spends rollouts).

Every ``eval_every`` steps the policy is evaluated on the held-out set (unseen strings of the frontier lengths,
the same for every regime and method): accuracy = mean exact-match rate of ``eval_samples`` completions per
prompt at temperature 1, under a fixed generation seed that does not disturb training; greedy accuracy at the
start and the end. Statistics, targets and verdicts: ``benchmarks/e2e_analysis.py``.

Each run's result (curve, ledger, timings) is written to ``benchmarks/results/e2e_runs/<regime>/<method>-s<seed>.json``
and reused by later invocations whose settings and code are the same (``--fresh`` reruns), so regimes, seeds and
ablation methods can be added run by run; these folders are not kept in git (each run is also in the aggregate, which
``--render`` redraws from alone). The aggregate goes to ``benchmarks/results/e2e.json``, one plot per
regime to ``e2e_<regime>.png`` and the docs section between ``<!-- e2e:start -->`` and ``<!-- e2e:end -->``
(``--name``/``--section`` for an ablation study; ``--quick`` writes ``e2e_quick*`` and no docs). One machine, 2
shared cores: quote ratios measured side by side in one invocation, not absolute times.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

from . import e2e_analysis as A

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
RUNS = os.path.join(RESULTS, "e2e_runs")
QUICK_RUNS = os.path.join(RESULTS, "cache", "e2e_quick_runs")
DOCS = os.path.join(os.path.dirname(HERE), "docs", "benchmarks.md")
SECTION = "e2e"

SIZES = {
    "quick": {"n_train": 128, "n_heldout": 42, "prompts_per_step": 8, "group": 8, "steps": 6, "eval_every": 3,
              "eval_samples": 2, "lr": 3e-4, "seeds": [0]},
    "full": {"n_train": 512, "n_heldout": 140, "prompts_per_step": 16, "group": 8, "steps": 40, "eval_every": 5,
             "eval_samples": 3, "lr": 3e-4, "seeds": [0, 1, 2]},
}
REGIMES = ("balanced", "hard", "easy")

# The predictor study's best configuration (issue 9: the hierarchical estimator, a content prior per prompt updated
# by the prompt's own record; the embedding reduction default, PCA, is already the package default).
BEST_DEPO: dict = {"depo_estimator": "hierarchical"}
# name -> (trainer key in e2e_methods.METHODS, overrides: DEPOConfig/GRPOConfig fields or trainer keyword arguments)
METHODS: dict[str, tuple[str, dict]] = {
    "GRPO": ("GRPO", {}),
    # At most 4 generation calls per round (DAPO's max_num_gen_batches), then zero-variance top-up: unbounded
    # refilling would cost ~11x GRPO's completions per step in the hard regime, more than this machine has.
    "DS": ("DS", {"max_calls": 4}),
    "GRESO": ("GRESO", {}),
    "MoPPS": ("DEPO", {"depo_estimator": "beta", "depo_features": ["history"], "depo_selection": "thompson",
                       "depo_exploration": 0.0, "depo_warmup_steps": 0}),
    "DEPO": ("DEPO", {}),
    "DEPO-best": ("DEPO", BEST_DEPO),
    # DEPO's defaults plus the answer_likelihood group (the policy's teacher-forced probability of the reference
    # answer, from the same prefill as the embedding). For this exact-match task it is close to the pass rate itself
    # (a completion passes when it is the answer), so this method shows what a near-exact predictor buys.
    "DEPO-answer": ("DEPO", {"depo_features": ["length", "history", "embedding", "answer_likelihood"]}),
    "DEPO-answer-K8": ("DEPO", {"depo_features": ["length", "history", "embedding", "answer_likelihood"],
                                "depo_candidate_multiplier": 8}),
    "DEPO-answer-K8-w2": ("DEPO", {"depo_features": ["length", "history", "embedding", "answer_likelihood"],
                                   "depo_candidate_multiplier": 8, "depo_warmup_steps": 2}),
    "DEPO-answer-K16-w2": ("DEPO", {"depo_features": ["length", "history", "embedding", "answer_likelihood"],
                                    "depo_candidate_multiplier": 16, "depo_warmup_steps": 2}),
    "DEPO-answer-K8-useful": ("DEPO", {"depo_features": ["length", "history", "embedding", "answer_likelihood"],
                                       "depo_candidate_multiplier": 8, "depo_selection": "usefulness"}),
    # The hierarchical estimator keeps each prompt's record itself (no 'history' group), ranks by usefulness and
    # explores by its own uncertainty (README, estimator table).
    "DEPO-hier": ("DEPO", {"depo_estimator": "hierarchical", "depo_features": ["length", "embedding"],
                           "depo_selection": "usefulness", "depo_exploration": 0.0}),
    "DEPO-answer-K8-w2-hier": ("DEPO", {"depo_estimator": "hierarchical",
                                        "depo_features": ["length", "embedding", "answer_likelihood"],
                                        "depo_selection": "usefulness", "depo_exploration": 0.0,
                                        "depo_candidate_multiplier": 8, "depo_warmup_steps": 2}),
}
DEFAULT_METHODS = ("GRPO", "DS", "GRESO", "MoPPS", "DEPO", "DEPO-best", "DEPO-answer-K8", "DEPO-answer-K8-w2")
QUICK_METHODS = ("GRPO", "DS", "GRESO", "MoPPS", "DEPO")


@dataclass(frozen=True)
class MethodSpec:
    label: str
    trainer: str
    overrides: dict = field(default_factory=dict)


def parse_method(text: str) -> MethodSpec:
    """``NAME`` (a built-in, or ``DEPO-<estimator>``) or ``LABEL=BASE:key=value,key=value`` (values JSON when they
    parse, else strings; BASE a built-in name whose overrides are extended)."""
    from . import e2e_methods

    text = text.strip()
    if "=" in text.split(":", 1)[0]:
        label, rest = text.split("=", 1)
        base, _, assignments = rest.partition(":")
        spec = parse_method(base)
        overrides = dict(spec.overrides)
        for item in filter(None, (a.strip() for a in assignments.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"Method {text!r}: {item!r} is not key=value.")
            try:
                overrides[key.strip()] = json.loads(value)
            except json.JSONDecodeError:
                overrides[key.strip()] = value.strip()
        return MethodSpec(label.strip(), spec.trainer, overrides)
    if text in METHODS:
        trainer, overrides = METHODS[text]
        return MethodSpec(text, trainer, dict(overrides))
    if text.startswith("DEPO-"):
        return MethodSpec(text, "DEPO", {"depo_estimator": text.split("-", 1)[1]})
    raise ValueError(f"Unknown method {text!r}: use one of {sorted(METHODS)}, DEPO-<estimator>, or "
                     f"LABEL=BASE:key=value,... (trainers: {sorted(e2e_methods.METHODS)}).")


def _offline():
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_DISABLED", "true")


def _load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _hash_files(paths: list[str]) -> str:
    h = hashlib.sha256()
    root = os.path.dirname(HERE)
    for path in paths:
        with open(path, "rb") as f:
            h.update(os.path.relpath(path, root).encode() + b"\0" + f.read())
    return h.hexdigest()[:16]


def _bench_files() -> list[str]:
    return [os.path.join(HERE, n) for n in ("e2e_methods.py", "e2e_task.py", "baselines.py")]


def _package_files() -> list[str]:
    files = []
    for folder, _, names in sorted(os.walk(os.path.join(os.path.dirname(HERE), "depo_trl"))):
        files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")]
    return files


def legacy_code_fingerprint() -> str:
    """The single hash earlier invocations stored (benchmark trainers + task + the whole package)."""
    return _hash_files(_bench_files() + _package_files())


def code_fingerprint() -> dict:
    """Hashes of the code a run's numbers depend on: the benchmark's trainers and task (every method) and the
    package (DEPO methods only, so a change to ``depo_trl`` reruns DEPO runs, not the baselines)."""
    return {"bench": _hash_files(_bench_files()), "package": _hash_files(_package_files())}


def _same_code(saved, current: dict, trainer: str) -> bool:
    if isinstance(saved, str):  # stored by an earlier invocation: one hash over everything
        return saved == current.get("legacy")
    if not isinstance(saved, dict) or saved.get("bench") != current["bench"]:
        return False
    return trainer != "DEPO" or saved.get("package") == current["package"]


# ------------------------------------------------------------------------------------------------ one run
def _make_callback(trainer_ref: dict, evaluate, every: int, curve: list, timer: dict):
    from transformers import TrainerCallback

    class HeldoutEval(TrainerCallback):
        """Evaluates before training and every ``every`` steps; evaluation time is not training time."""

        def _record(self, step: int, final: bool):
            t0 = time.perf_counter()
            trainer = trainer_ref["trainer"]
            sampled, greedy = evaluate(trainer.model, greedy=step == 0 or final)
            ledger = trainer.ledger
            curve.append({
                "step": step, "completions": ledger.completions, "tokens": ledger.tokens,
                "train_seconds": t0 - timer["start"] - timer["eval"], "accuracy": sampled, "greedy_accuracy": greedy,
                "useful_groups": ledger.useful_groups, "groups": ledger.groups,
            })
            timer["eval"] += time.perf_counter() - t0

        def on_train_begin(self, args, state, control, **kwargs):
            timer["start"], timer["eval"] = time.perf_counter(), 0.0
            self._record(0, False)

        def on_step_end(self, args, state, control, **kwargs):
            final = state.global_step == state.max_steps
            if (state.global_step % every == 0 or final) and curve[-1]["step"] != state.global_step:
                self._record(state.global_step, final)

    return HeldoutEval()


def _split_overrides(overrides: dict, config_cls) -> tuple[dict, dict]:
    from dataclasses import fields

    names = {f.name for f in fields(config_cls)}
    config = {k: v for k, v in overrides.items() if k in names}
    return config, {k: v for k, v in overrides.items() if k not in names}


def run_method(method: MethodSpec, size: dict, spec, warm_state: dict, train, heldout, seed: int, workdir: str,
               reward_func=None, log=print) -> dict:
    """Train one method from the warm-started weights for ``size['steps']`` steps; its curve, ledger and timings."""
    import torch
    from trl import GRPOConfig

    from depo_trl import DEPOConfig

    from . import e2e_methods, e2e_task

    tokenizer, model = e2e_task.build(spec)
    model.load_state_dict(warm_state)
    common = {
        "output_dir": os.path.join(workdir, f"{method.label}-s{seed}"),
        "per_device_train_batch_size": size["prompts_per_step"] * size["group"], "num_generations": size["group"],
        "max_completion_length": spec.max_completion_length, "max_steps": size["steps"], "learning_rate": size["lr"],
        "lr_scheduler_type": "constant", "warmup_steps": 0, "temperature": 1.0, "beta": 0.0, "bf16": False,
        "use_cpu": True, "report_to": "none", "logging_steps": max(1, size["eval_every"]), "save_strategy": "no",
        "seed": seed, "disable_tqdm": True, "activation_checkpointing": False,
    }
    config_cls = DEPOConfig if method.trainer == "DEPO" else GRPOConfig
    config_overrides, trainer_kwargs = _split_overrides(method.overrides, config_cls)
    if method.trainer == "DEPO":
        config_overrides = {"depo_audit_log": False} | config_overrides
    config = config_cls(**(common | config_overrides))

    def evaluate(policy, greedy: bool):
        sampled = e2e_task.pass_rates(policy, tokenizer, heldout, size["eval_samples"], spec.max_completion_length,
                                      do_sample=True, seed=seed + 12345)
        exact = (e2e_task.pass_rates(policy, tokenizer, heldout, 1, spec.max_completion_length, do_sample=False)
                 if greedy else None)
        return float(sampled.mean()), None if exact is None else float(exact.mean())

    curve: list[dict] = []
    timer: dict = {}
    holder: dict = {}
    callback = _make_callback(holder, evaluate, size["eval_every"], curve, timer)
    cls = e2e_methods.METHODS[method.trainer]
    trainer = cls(model=model, reward_funcs=reward_func or e2e_task.reversal_reward, args=config, train_dataset=train,
                  processing_class=tokenizer, callbacks=[callback], **trainer_kwargs)
    holder["trainer"] = trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)  # the benchmark prints its own summary
    trainer.remove_callback(ProgressCallback)
    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    ledger = trainer.ledger.as_dict()
    result = {
        "method": method.label, "trainer": cls.__name__, "overrides": method.overrides, "seed": seed,
        "curve": curve, "ledger": ledger, "train_seconds": curve[-1]["train_seconds"], "eval_seconds": timer["eval"],
        "total_seconds": total,
        # time in training rounds outside TRL's generation/scoring: the method's own choosing and learning
        # (for DEPO: candidate drawing, policy embedding, estimator predict/fit, selection, bookkeeping)
        "overhead_seconds": ledger["round_seconds"] - ledger["generate_seconds"],
    }
    if method.trainer == "DEPO":
        result["depo_stats"] = trainer.depo_stats.state_dict()
    if method.trainer == "GRESO":
        result["greso"] = {"p_easy": trainer.p_easy, "p_hard": trainer.p_hard, "examined": trainer.examined,
                           "skipped": trainer.skipped}
    del trainer, model
    return result


# ------------------------------------------------------------------------------------------------ warm start
def warm_start_profile(model, tokenizer, spec, seed: int, per_length: int, samples: int, group: int) -> dict:
    """Pass rate by length of the warm-started policy (train-universe strings), and each regime's expected
    useful-group share under uniform sampling, ``1 - p**G - (1-p)**G`` averaged over its pool's length mix."""
    import numpy as np
    from datasets import Dataset

    from . import e2e_task

    words = e2e_task.probe_words(spec, per_length, seed)
    rows = [{"prompt": e2e_task.make_prompt(w), "answer": w[::-1], "length": n} for n, ws in words.items() for w in ws]
    data = Dataset.from_list(rows)
    rates = e2e_task.pass_rates(model, tokenizer, data, samples, spec.max_completion_length, do_sample=True,
                                seed=seed + 999)
    lengths = np.array(data["length"])
    by_length = {}
    for n in sorted(words):
        r = rates[lengths == n]
        by_length[n] = {"pass_rate": float(r.mean()), "useful": float((1 - r**group - (1 - r) ** group).mean()),
                        "difficulty": spec.difficulty(n)}
    regimes = {}
    for regime in REGIMES:
        counts = e2e_task.regime_length_counts(spec, regime, 10_000)
        total = sum(counts.values())
        regimes[regime] = {
            "mix": {c: sum(v for n, v in counts.items() if spec.difficulty(n) == c) / total for c in e2e_task.CLASSES},
            "expected_useful_share": sum(by_length[n]["useful"] * v for n, v in counts.items()) / total,
        }
    return {"by_length": by_length, "regimes": regimes, "per_length": per_length, "samples": samples}


# ------------------------------------------------------------------------------------------------ orchestration
def run_benchmark(size: dict, spec, methods: list[str], regimes: list[str], seeds: list[int], name: str,
                  command: str, docs_path: str | None, section: str = SECTION, out_dir: str = RESULTS,
                  runs_dir: str = RUNS, threads: int = 1, cache_dir: str | None = None, reward_func=None,
                  fresh: bool = False, cached_only: bool = False, log=print) -> dict:
    """Warm start (cached), every regime x seed x method (per-run JSON, reused when unchanged), analysis, JSON,
    plots and (if ``docs_path``) the docs section."""
    import warnings

    import datasets
    import torch
    import transformers
    import trl

    from . import e2e_task

    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    specs = [parse_method(m) for m in methods]
    if len({s.label for s in specs}) != len(specs):
        raise ValueError(f"Method labels must be distinct, got {[s.label for s in specs]}.")
    t_start = time.perf_counter()
    load_start = _load_average()
    log(f"e2e benchmark ({command}): {size}; regimes {regimes}; seeds {seeds}; load average {load_start}")

    t0 = time.perf_counter()
    tokenizer, model, info = e2e_task.warm_start(spec, exclude=e2e_task.heldout_words(spec), cache_dir=cache_dir,
                                                 log=log)
    warm_seconds = time.perf_counter() - t0
    profile = warm_start_profile(model, tokenizer, spec, 0, size.get("profile_per_length", 16), 8, size["group"])
    log("warm start: pass rate at T=1 by length: " + ", ".join(
        f"{n} ({v['difficulty']}): {v['pass_rate']:.2f}" for n, v in profile["by_length"].items()))
    log("expected useful share under uniform sampling: " + ", ".join(
        f"{r}: {v['expected_useful_share']:.2f}" for r, v in profile["regimes"].items()))
    warm_state = copy.deepcopy(model.state_dict())
    parameters = sum(p.numel() for p in model.parameters())
    fingerprint = code_fingerprint()
    current_code = dict(fingerprint, legacy=legacy_code_fingerprint())

    workdir = tempfile.mkdtemp(prefix="e2e-")
    by_regime: dict[str, list[dict]] = {}
    reused = 0
    try:
        splits = {r: e2e_task.make_splits(spec, size["n_train"], size["n_heldout"], regime=r) for r in regimes}
        by_regime = {r: [] for r in regimes}
        for seed in seeds:  # seed-major: an interrupted invocation leaves whole seeds of every regime behind
            for regime in regimes:
                train, heldout = splits[regime]
                for method in specs:
                    key = {"size": {k: v for k, v in size.items() if k != "seeds"}, "task": asdict(spec),
                           "regime": regime, "seed": seed, "trainer": method.trainer, "overrides": method.overrides,
                           "code": fingerprint}
                    path = os.path.join(runs_dir, regime, f"{method.label}-s{seed}.json")
                    result = None
                    if not fresh and reward_func is None and os.path.exists(path):
                        with open(path) as f:
                            saved = json.load(f)
                        saved_key = dict(saved.get("key") or {})
                        same = _same_code(saved_key.pop("code", None), current_code, method.trainer)
                        wanted = json.loads(json.dumps({k: v for k, v in key.items() if k != "code"}))
                        if same and saved_key == wanted:
                            result, reused = saved, reused + 1
                            if saved["key"]["code"] != fingerprint:  # store the current form of the hashes
                                saved["key"]["code"] = fingerprint
                                with open(path, "w") as f:
                                    json.dump(saved, f, indent=1, default=float)
                    if result is None and cached_only:
                        log(f"[{regime} {method.label} s{seed}] not run yet: left out (--cached-only)")
                        continue
                    if result is None:
                        result = run_method(method, size, spec, warm_state, train, heldout, seed, workdir,
                                            reward_func=reward_func, log=log)
                        result["key"] = key
                        result["regime"] = regime
                        result["load_average"] = _load_average()
                        os.makedirs(os.path.dirname(path), exist_ok=True)
                        with open(path, "w") as f:
                            json.dump(result, f, indent=1, default=float)
                    ledger = result["ledger"]
                    log(f"[{regime} {method.label} s{seed}] {result['total_seconds']:.0f} s "
                        f"({result['eval_seconds']:.0f} s eval); {ledger['completions']} completions, useful "
                        f"{ledger['useful_groups'] / max(ledger['groups'], 1):.2f}, accuracy "
                        f"{result['curve'][0]['accuracy']:.3f} -> {result['curve'][-1]['accuracy']:.3f}")
                    by_regime[regime].append(result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    payload = {
        "meta": {
            "command": command, "size": size, "task": asdict(spec), "methods": methods,
            "method_specs": {s.label: {"trainer": s.trainer, "overrides": s.overrides} for s in specs},
            "regimes": regimes, "seeds": seeds, "name": name, "section": section,
            "machine": f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, torch "
                       f"{torch.__version__} ({threads} thread{'s' if threads > 1 else ''}), trl {trl.__version__}, "
                       f"transformers {transformers.__version__}, datasets {datasets.__version__}",
            "load_average_start": load_start, "load_average_end": _load_average(),
            "total_seconds": time.perf_counter() - t_start, "runs_reused": reused, "parameters": parameters,
            "code_fingerprint": fingerprint,
            "runs_dir": os.path.relpath(runs_dir, os.path.dirname(HERE)),
        },
        "warm_start": {"info": {k: v for k, v in info.items() if k != "path"}, "seconds_this_run": warm_seconds,
                       "profile": profile},
        "runs": by_regime,
    }
    by_regime = {regime: runs for regime, runs in by_regime.items() if runs}
    payload["runs"] = by_regime
    payload["meta"]["regimes"] = [r for r in regimes if r in by_regime]
    payload["meta"]["missing"] = [f"{r} {m.label} s{seed}" for r in regimes for m in specs for seed in seeds
                                  if not any(x["method"] == m.label and x["seed"] == seed for x in by_regime.get(r, []))]
    payload["analysis"] = {regime: A.analyse_regime(runs) for regime, runs in by_regime.items()}
    payload["verdicts"] = {regime: A.verdicts(regime, a) for regime, a in payload["analysis"].items()}
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, f"{name}.json")
    with open(json_path, "w") as f:
        json.dump(payload, f, indent=1, default=float)
    log(f"wrote {json_path}")
    log("")
    log(render(payload, docs_path, out_dir, log=log))
    return payload


# ------------------------------------------------------------------------------------------------ output
def regime_text(regime: str, payload: dict) -> str:
    analysis = payload["analysis"][regime]
    return "\n\n".join([A.regime_table(analysis), *A.verdict_lines(regime, analysis)])


def _profile_table(payload: dict) -> str:
    by_length = payload["warm_start"]["profile"]["by_length"]
    lines = ["| length | " + " | ".join(str(n) for n in by_length) + " |",
             "|---|" + "---|" * len(by_length),
             "| class | " + " | ".join(v["difficulty"] for v in by_length.values()) + " |",
             "| pass rate at T=1 | " + " | ".join(f"{v['pass_rate']:.2f}" for v in by_length.values()) + " |"]
    return "\n".join(lines)


def docs_body(payload: dict, png_rel: dict[str, str]) -> str:
    meta, size, task = payload["meta"], payload["meta"]["size"], payload["meta"]["task"]
    profile = payload["warm_start"]["profile"]
    regimes = meta["regimes"]
    all_runs = [r for runs in payload["runs"].values() for r in runs]
    n_runs, run_seconds = len(all_runs), sum(r["total_seconds"] for r in all_runs)
    setup = (
        f"Command: `{meta['command']}` ({len(meta['seeds'])} training seeds: {meta['seeds']}). Machine: "
        f"{meta['machine']}; load average when started: {meta['load_average_start']}. The cores are shared: ratios "
        f"measured side by side are what to quote, not absolute times. This invocation took "
        f"{meta['total_seconds']:.0f} s ({meta['runs_reused']} runs reused from earlier invocations with the same "
        f"settings and code; per-run JSON in `{meta['runs_dir']}/`, not kept in git: each run is also in "
        f"`benchmarks/results/{meta['name']}.json`); the {n_runs} runs shown took {run_seconds:.0f} s "
        f"in all (training + evaluation)."
    )
    mixes = "; ".join(
        f"`{r}`: " + ", ".join(f"{c} {v:.0%}" for c, v in profile["regimes"][r]["mix"].items() if v > 0)
        + f" (expected useful share under uniform sampling {profile['regimes'][r]['expected_useful_share']:.2f})"
        for r in regimes if r in profile["regimes"])
    task_text = (
        f"Task: string reversal, exact-match binary reward; the length is the difficulty knob. Model: char-level "
        f"Qwen2, {task['num_layers']} layers, hidden {task['hidden_size']} ({meta['parameters']:,} parameters), "
        f"warm-started once by {payload['warm_start']['info'].get('steps', task['warm_steps'])} supervised steps "
        f"(until the 20-step mean loss reached {task.get('warm_target_loss', 0)}; final "
        f"{payload['warm_start']['info'].get('final_loss', float('nan')):.3f}) on lengths {task['min_length']}.."
        f"{task['warm_max_length']}; every run starts from that checkpoint. Its pass rate by length "
        f"({profile['per_length']} train-universe strings per length, {profile['samples']} samples each):"
    )
    pools = (
        f"Training pools ({size['n_train']} prompts each): {mixes}. Held-out set (every regime, every method): "
        f"{size['n_heldout']} unseen strings balanced over the frontier lengths, {size['eval_samples']} samples "
        f"per prompt at T=1 every {size['eval_every']} steps. Each run: {size['steps']} optimizer steps of "
        f"{size['prompts_per_step']} prompts x {size['group']} completions, constant lr {size['lr']}, beta 0."
    )
    methods = "Methods: " + "; ".join(
        f"`{label}` = {spec['trainer']}" + (f" with {json.dumps(spec['overrides'])}" if spec["overrides"] else "")
        for label, spec in meta["method_specs"].items()
    ) + (". GRPO = `trl.GRPOTrainer`; DS = DAPO dynamic sampling; GRESO = GRESO's skip rule; DEPO = "
         "`depo_trl.DEPOTrainer` (defaults: K = 4 candidates per rollout, band [0.15, 0.85], exploration 0.1, "
         "features length + history + policy embedding, 10 warm-up steps of plain GRPO); DS makes at most `max_calls` "
         "generation calls per round and then tops the batch up with zero-variance groups (DAPO's "
         "max_num_gen_batches; every completion counts). All are narrow overrides "
         "of TRL's `_generate_and_score_completions` that call `super()` (`benchmarks/e2e_methods.py`).")
    how = (
        "Reading the tables: mean ± sample sd over seeds. `final acc`: held-out accuracy at the last evaluation "
        f"(trailing mean of {A.SMOOTH} evaluations); `acc at GRPO's budget`: the same at GRPO's completion count "
        "(`(real)`: the gap to GRPO exceeds the sum of the two sds). `to grpo_final` / `to grpo_90`: cost at the "
        "first evaluation that reaches GRPO's final accuracy / 90% of GRPO's gain (`never`: not within the run; "
        "`[k/n seeds]`: only k seeds reached it, mean over those); ratios are per seed against GRPO's mean cost "
        "(a GRPO seed that never reaches its own mean counts its whole run). Wall time is training time "
        "(evaluation excluded), with each method's own selection work inside it; `method overhead s` is that "
        "work alone (time in training rounds outside TRL's generation and scoring: for DEPO, policy embedding + "
        "estimator + selection)."
    )
    title = ("## End to end across difficulty regimes (real trainers, CPU)" if meta.get("section", SECTION) == SECTION
             else f"## End to end, ablation `{meta.get('section')}`: DEPO variants beside GRPO and DS")
    parts = [title, setup, task_text, _profile_table(payload),
             pools, methods, how]
    for regime in regimes:
        parts.append(f"### Regime `{regime}`")
        parts.append(regime_text(regime, payload))
        if regime in png_rel:
            parts.append(f"![{regime}: held-out accuracy vs completions]({png_rel[regime]})")
    if meta.get("missing"):
        parts.append(f"Not run (no saved result; left out of the tables above): {len(meta['missing'])} runs: "
                     + ", ".join(meta["missing"]) + ".")
    parts.append(f"Full numbers: `benchmarks/results/{meta['name']}.json`.")
    return "\n\n".join(parts)


def render(payload: dict, docs_path: str | None, out_dir: str, log=print) -> str:
    """Tables, one plot per regime and (if ``docs_path``) the docs section, from a payload (fresh or saved)."""
    meta = payload["meta"]
    png_rel, texts = {}, []
    for regime in meta["regimes"]:
        runs = payload["runs"][regime]
        size = meta["size"]
        png = os.path.join(out_dir, f"{meta['name']}_{regime}.png")
        title = (f"{regime}: string reversal, tiny Qwen2 ({meta['parameters']:,} params), {size['steps']} steps x "
                 f"{size['prompts_per_step']} prompts x {size['group']}")
        if A.plot_regime(regime, runs, payload["analysis"][regime], png, title):
            log(f"wrote {png}")
            if docs_path:
                png_rel[regime] = os.path.relpath(png, os.path.dirname(os.path.abspath(docs_path)))
        texts.append(f"== {regime} ==\n" + regime_text(regime, payload))
    if docs_path:
        A.update_docs_section(docs_body(payload, png_rel), docs_path, meta.get("section", SECTION))
        log(f"updated the {meta.get('section', SECTION)} section of {docs_path}")
    return "\n\n".join(texts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (CI smoke): one seed, a few steps")
    parser.add_argument("--regimes", default=None, help=f"comma-separated, from {','.join(REGIMES)} (default: all)")
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated built-in names (default {','.join(DEFAULT_METHODS)}; "
                             f"{','.join(QUICK_METHODS)} with --quick)")
    parser.add_argument("--method", action="append", default=[],
                        help="an extra method LABEL=BASE:key=value,key=value (repeatable), e.g. "
                             "'DEPO-w3=DEPO:depo_warmup_steps=3'")
    parser.add_argument("--seeds", default=None, help="comma-separated training seeds (default 0,1,2; 0 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="override the optimizer steps")
    parser.add_argument("--lr", type=float, default=None, help="override the learning rate")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="override the evaluation interval in steps (finer reads the crossing points finer)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: shared machine)")
    parser.add_argument("--name", default=None, help="output name (default e2e, e2e_quick with --quick)")
    parser.add_argument("--section", default=SECTION, help="docs section marker name")
    parser.add_argument("--out", default=RESULTS, help="folder for the JSON and PNGs")
    parser.add_argument("--docs", default=None, help=f"markdown file to write the section into (default "
                                                     f"{os.path.relpath(DOCS)}; --quick only when given)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite the docs section")
    parser.add_argument("--fresh", action="store_true", help="rerun every run, even when a saved one matches")
    parser.add_argument("--cached-only", action="store_true",
                        help="train nothing: tables, plots and docs from the saved runs that match (others left out)")
    parser.add_argument("--render", metavar="JSON", default=None,
                        help="no training: redraw the tables, PNGs and docs section from a saved results JSON")
    args = parser.parse_args(argv)
    _offline()
    if args.render:
        with open(args.render) as f:
            payload = json.load(f)
        docs = None if args.no_docs else args.docs if args.docs is not None else DOCS
        print(render(payload, docs, os.path.dirname(os.path.abspath(args.render))))
        return payload
    from . import e2e_task

    size = copy.deepcopy(SIZES["quick" if args.quick else "full"])
    if args.steps is not None:
        size["steps"] = args.steps
    if args.lr is not None:
        size["lr"] = args.lr
    if args.eval_every is not None:
        size["eval_every"] = args.eval_every
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else size["seeds"]
    regimes = [r.strip() for r in args.regimes.split(",")] if args.regimes else list(REGIMES)
    unknown = [r for r in regimes if r not in REGIMES]
    if unknown:
        parser.error(f"unknown regimes {unknown}; use {','.join(REGIMES)}")
    methods = ([m.strip() for m in args.methods.split(",") if m.strip()] if args.methods
               else list(QUICK_METHODS if args.quick else DEFAULT_METHODS)) + args.method
    name = args.name or ("e2e_quick" if args.quick else "e2e")
    command = "python -m benchmarks.e2e " + " ".join(argv if argv is not None else sys.argv[1:])
    docs = None if args.no_docs else args.docs if args.docs is not None else (None if args.quick else DOCS)
    return run_benchmark(size, e2e_task.TaskSpec(), methods, regimes, seeds, name, command.strip(), docs,
                         section=args.section, out_dir=args.out,
                         # Another name keeps its own runs: a run's file name does not say its size.
                         runs_dir=QUICK_RUNS if args.quick else RUNS if name == "e2e" else f"{RUNS}_{name}",
                         threads=args.threads, fresh=args.fresh, cached_only=args.cached_only)


if __name__ == "__main__":
    main()
