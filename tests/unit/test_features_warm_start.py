"""Feature groups (text, metadata, embedding options, the registry) and warm start from a pass-rate JSONL."""

import json
import os

import numpy as np
import pytest

from depo_trl.estimators import ESTIMATORS, make_estimator, warm_start_from_jsonl
from depo_trl.estimators.warm_start import read_passrate_jsonl, row_label
from depo_trl.features import (
    FEATURE_GROUPS,
    CandidateBatch,
    EmbeddingCache,
    EmbeddingFeatures,
    Featurizer,
    MetadataFeatures,
    TextFeatures,
    check_feature_names,
)
from depo_trl.history import prompt_key

# The first 300 rows of shared/data's DeepScaleR pass-rate file, shipped with the tests (see tests/data/README.md).
SHARED_PASSRATE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                               "deepscaler_passrate_300.jsonl")


def batch(texts, **kwargs):
    return CandidateBatch(keys=np.array([prompt_key(t) for t in texts], dtype=np.int64), texts=texts, **kwargs)


# ------------------------------------------------------------------------------------------------------ text
def test_text_features_tfidf_fixed_width_idf_frozen_and_seeded():
    texts = ["Compute $3^4 + 2$.", "Find all real x with x^2 = 4.", "", "Find all real x with x^2 = 9."]
    group = TextFeatures(dim=32)
    X = group.transform(batch(texts))  # the first batch fits the IDF
    assert isinstance(X, np.ndarray) and X.shape == (4, 32) and np.isfinite(X).all()
    assert not X[2].any()  # empty text: all zeros, no NaN
    # Each non-empty block (word n-grams, then character n-grams) is unit length.
    np.testing.assert_allclose(np.linalg.norm(X[0, :16]), 1.0)
    np.testing.assert_allclose(np.linalg.norm(X[0, 16:]), 1.0)
    # Near-duplicate prompts are closer than unrelated ones.
    assert X[1] @ X[3] > X[1] @ X[0]
    # The IDF is frozen after the first batch: a prompt's columns do not depend on the batch it comes in.
    np.testing.assert_allclose(group.transform(batch(texts[1:2] + ["other words entirely"]))[0], X[1])
    # Fitting the IDF on other texts changes the weights; another seed collides differently.
    other = TextFeatures(dim=32).fit(batch(["x^2 = 4 again and again", "again"]))
    assert not np.allclose(other.transform(batch(texts[:2])), X[:2])
    assert not np.array_equal(TextFeatures(dim=32, seed=1).transform(batch(texts))[0], X[0])
    assert TextFeatures(dim=8).transform(batch([])).shape == (0, 8)
    with pytest.raises(ValueError, match="dim"):
        TextFeatures(dim=1)


def test_wide_text_is_sparse_reads_extra_columns_and_round_trips():
    import scipy.sparse as sp

    texts = ["Compute 3 + 4.", "Prove that the sum of two odd numbers is even."]
    meta = {"answer": ["7", "even"]}
    group = TextFeatures(columns=["answer"])  # default width 2**18 per source: sparse
    X = group.transform(batch(texts, metadata=meta))
    assert sp.issparse(X) and X.shape == (2, 2 * 2**18) and X.nnz > 0
    assert X[:, 2**18:].nnz > 0  # the answer column has its own block
    f = Featurizer(["length", "text"], options={"text": {"columns": ["answer"]}})
    assert f.sparse and f.metadata_columns == ["answer"]
    Y = f.transform(batch(texts, metadata=meta))
    assert sp.issparse(Y) and Y.shape == (2, 6 + 2 * 2**18)
    with pytest.raises(ValueError, match="answer"):
        TextFeatures(columns=["answer"]).transform(batch(texts))
    restored = Featurizer(["length", "text"], options={"text": {"columns": ["answer"]}})
    restored.load_state_dict(f.state_dict())
    probe = batch(["A new prompt, 3 + 5.", texts[0]], metadata={"answer": ["8", "7"]})
    assert abs(restored.transform(probe) - f.transform(probe)).max() < 1e-12


# -------------------------------------------------------------------------------------------------- metadata
def test_metadata_numeric_categorical_and_auto_columns():
    group = MetadataFeatures({"level": "numeric", "subject": "categorical", "source": "auto"}, buckets=4)
    meta = {
        "level": [1, 5, None, 3.5],
        "subject": ["algebra", "geometry", "algebra", ["algebra", "geometry"]],
        "source": ["amc", 2, float("nan"), "amc"],
    }
    X = group.transform(batch(["a", "b", "c", "d"], metadata=meta))
    assert X.shape == (4, 2 + 4 + (2 + 4))
    np.testing.assert_array_equal(X[:, 0], [1, 5, 0, 3.5])  # level value
    np.testing.assert_array_equal(X[:, 1], [0, 0, 1, 0])  # level missing flag
    subject = X[:, 2:6]
    np.testing.assert_array_equal(subject[0], subject[2])  # same category, same one-hot
    np.testing.assert_allclose(subject.sum(axis=1), 1.0)  # one-hot (a list spreads 1 over its buckets)
    np.testing.assert_allclose(subject[3], (subject[0] + subject[1]) / 2)
    source = X[:, 6:]
    assert source[1, 0] == 2 and source[1, 1] == 0 and not source[1, 2:].any()  # a number in an auto column
    assert source[2, 1] == 1 and not source[2, 2:].any()  # NaN: missing
    np.testing.assert_array_equal(source[0], source[3])


def test_metadata_errors_name_the_problem():
    with pytest.raises(ValueError, match="columns"):
        MetadataFeatures()
    with pytest.raises(ValueError, match="kind"):
        MetadataFeatures({"level": "ordinal"})
    group = MetadataFeatures(["level", "subject"])
    with pytest.raises(ValueError, match=r"\['subject'\].*\['level'\]"):
        group.transform(batch(["a"], metadata={"level": [1]}))
    with pytest.raises(ValueError, match="declared numeric"):
        MetadataFeatures({"level": "numeric"}).transform(batch(["a"], metadata={"level": ["hard"]}))


# ------------------------------------------------------------------------------------- registry and options
def test_featurizer_registry_options_and_errors():
    assert {"length", "text", "metadata", "history", "embedding"} <= set(FEATURE_GROUPS)
    with pytest.raises(ValueError, match="Valid feature groups: .*'text'"):
        check_feature_names(["length", "txt"])
    with pytest.raises(ValueError, match="twice"):
        check_feature_names(["text", "text"])
    with pytest.raises(ValueError, match="not in the feature list"):
        Featurizer(["length"], options={"text": {"dim": 8}})
    with pytest.raises(ValueError, match="Bad options"):
        Featurizer(["text"], options={"text": {"buckets": 8}})
    f = Featurizer(
        ["length", "text", "metadata"], options={"text": {"dim": 16}, "metadata": {"columns": ["level"], "buckets": 2}}
    )
    assert f.metadata_columns == ["level"] and not f.needs_embedding and not f.needs_history
    X = f.transform(batch(["x + 1 = 2", "y"], metadata={"level": ["easy", 3]}))
    assert X.shape == (2, 6 + 16 + 4)


def test_embedding_pca_grows_without_changing_columns_then_freezes_and_keeps_the_signal():
    rng = np.random.default_rng(0)
    # Hidden states that live in a 6-dim subspace of 40 dims: a 6-component PCA keeps all pairwise distances.
    basis = rng.normal(size=(6, 40))
    emb = rng.normal(size=(40, 6)) @ basis + 5.0
    group = EmbeddingFeatures(dim=6, fit_samples=16)
    first = group.transform(batch([str(i) for i in range(4)], embeddings=emb[:4]))
    assert first.shape == (4, 6) and group.rank_ == 3 and not group.fitted  # rank n - 1 from the first batch
    assert np.abs(first[:, 3:]).max() == 0 and np.abs(first[:, :3]).max() > 0  # columns past the rank are 0
    second = group.transform(batch([str(i) for i in range(4, 10)], embeddings=emb[4:10]))  # 10 >= 2 x 4: grows
    assert group.rank_ == 6
    # The columns that already existed kept their meaning: the first rows read the same in them.
    again = group.transform(batch([str(i) for i in range(4)], embeddings=emb[:4]))
    np.testing.assert_allclose(again[:, :3], first[:, :3], atol=1e-9)
    group.transform(batch([str(i) for i in range(10, 20)], embeddings=emb[10:20]))
    assert group.fitted  # frozen after fit_samples
    Z = group.transform(batch([str(i) for i in range(40)], embeddings=emb))
    distances = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    np.testing.assert_allclose(np.linalg.norm(Z[:, None] - Z[None], axis=-1), distances, atol=1e-6)
    frozen = group.components_.copy()
    group.transform(batch(["x"] * 5, embeddings=rng.normal(size=(5, 40))))
    np.testing.assert_array_equal(group.components_, frozen)  # no refit once frozen
    # A random projection of the same width does not keep the distances; more dims than the rank pad with 0.
    R = EmbeddingFeatures(dim=6, reduction="random").transform(batch([str(i) for i in range(40)], embeddings=emb))
    assert not np.allclose(np.linalg.norm(R[:, None] - R[None], axis=-1), distances, atol=1e-3)
    wide = EmbeddingFeatures(dim=10).fit(embeddings=emb)
    assert wide.fitted and np.abs(wide.transform(batch(["a"], embeddings=emb[:1]))[0, 6:]).max() < 1e-6
    restored = EmbeddingFeatures(dim=6, fit_samples=16)
    restored.load_state_dict(group.state_dict())
    np.testing.assert_allclose(restored.transform(batch(["a"], embeddings=emb[:1])), Z[:1], atol=1e-9)
    with pytest.raises(ValueError, match="reduction"):
        EmbeddingFeatures(reduction="umap")


def test_embedding_options_and_cache():
    emb = np.random.default_rng(0).normal(size=(3, 10)) * np.array([[1.0], [5.0], [0.1]])
    b = batch(["a", "b", "c"], embeddings=emb)
    np.testing.assert_array_equal(EmbeddingFeatures(dim=0).transform(b), emb)
    normed = EmbeddingFeatures(dim=0, normalize=True).transform(b)
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0)
    assert Featurizer(["embedding"], embedding_dim=4).transform(b).shape == (3, 4)
    assert Featurizer(["embedding"], embedding_dim=4, options={"embedding": {"dim": 6}}).transform(b).shape == (3, 6)

    cache = EmbeddingCache(refresh_every=2, max_prompts=2)
    np.testing.assert_array_equal(cache.missing([1, 2], round=0), [True, True])
    cache.put([1, 2], emb[:2], round=0)
    np.testing.assert_array_equal(cache.missing([1, 2], round=1), [False, False])
    np.testing.assert_array_equal(cache.missing([1, 2], round=2), [True, True])  # two rounds old: re-embed
    np.testing.assert_array_equal(cache.get([2, 1]), emb[[1, 0]])
    cache.put([3], emb[2:], round=2)  # over max_prompts: the oldest entry goes
    assert len(cache) == 2 and cache.missing([1], round=2)[0]
    with pytest.raises(KeyError):
        cache.get([1])


# ------------------------------------------------------------------------------------------------ warm start
def test_row_label_reads_every_supported_format():
    assert row_label({"passes": 3, "trials": 8}) == (3.0, 8.0)
    assert row_label({"successes_of_128": 32, "n_samples": 128}) == (32.0, 128.0)
    assert row_label({"successes_of_128": [30, 34], "n_samples": 128}) == (64.0, 256.0)
    assert row_label({"successes_of_16": 4}) == (4.0, 16.0)
    assert row_label({"pass_rate": 0.25, "n_samples": 64}) == (16.0, 64.0)
    assert row_label({"pass_rate": 0.5}, default_trials=8) == (4.0, 8.0)
    assert row_label({"problem": "no label"}) is None
    assert row_label({"pass_rate": 1.5}) is None


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def synthetic_rows(n=120, seed=0):
    """Prompts whose wording tells their difficulty: 'simple' ones mostly pass, 'olympiad' ones mostly fail."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        hard = i % 2 == 1
        words = " ".join(rng.choice(["triangle", "integer", "sum", "prime", "area"], size=4))
        text = f"{'Olympiad: prove that' if hard else 'Simple: compute'} {words} number {i}."
        rows.append({"problem": text, "successes_of_128": int(rng.binomial(128, 0.1 if hard else 0.9)),
                     "n_samples": 128})
    return rows


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_warm_start_fits_every_estimator_from_content(name, tmp_path):
    path = tmp_path / "rates.jsonl"
    rows = synthetic_rows()
    write_jsonl(path, rows + [{"problem": "unlabelled"}])
    featurizer = Featurizer(["length", "text"], options={"text": {"dim": 32}})
    est = make_estimator(name)
    summary = warm_start_from_jsonl(est, featurizer, str(path), max_trials=8, batch_size=40)
    assert summary["rows"] == 120 and summary["skipped"] == 1 and summary["updates"] == 3
    assert 0.45 < summary["mean_pass_rate"] < 0.55
    probe = ["Simple: compute prime sum area integer number 999.", "Olympiad: prove that prime sum area integer number 999."]
    X = featurizer.transform(batch(probe))
    p = est.predict_pass_rate(X, keys=np.array([prompt_key(t) for t in probe], dtype=np.int64))
    if name == "beta":  # history only: unseen prompts keep the prior; seen ones carry over by key
        assert p[0] == p[1] == 0.5
        seen = [rows[0]["problem"], rows[1]["problem"]]
        q = est.predict_pass_rate(np.zeros((2, 0)), keys=np.array([prompt_key(t) for t in seen], dtype=np.int64))
        assert q[0] > 0.7 and q[1] < 0.3
    else:
        assert p[0] > p[1] + 0.1


def test_warm_start_options_and_errors(tmp_path):
    path = tmp_path / "rates.jsonl"
    write_jsonl(path, [dict(r, level=i % 3) for i, r in enumerate(synthetic_rows(40))])
    # 'history' is allowed (every warm-start prompt is unseen); a callable featurizer works too.
    est = make_estimator("logistic")
    warm_start_from_jsonl(est, Featurizer(["length", "history"]), str(path))
    assert est.n_features_in_ == 12
    calls = []
    warm_start_from_jsonl(make_estimator("logistic"), lambda texts: calls.append(texts) or np.ones((len(texts), 1)),
                          str(path), render=lambda p: "<user>" + p, indices=range(10))
    assert len(calls[0]) == 10 and calls[0][0].startswith("<user>")
    f = Featurizer(["metadata"], options={"metadata": {"columns": ["level"], "buckets": 2}})
    assert warm_start_from_jsonl(make_estimator("logistic"), f, str(path))["n_features"] == 4
    with pytest.raises(ValueError, match="embedding"):
        warm_start_from_jsonl(make_estimator("logistic"), Featurizer(["embedding"]), str(path))
    with pytest.raises(ValueError, match="text_field"):
        warm_start_from_jsonl(make_estimator("logistic"), Featurizer(["length"]), str(path), text_field="question")
    with pytest.warns(UserWarning, match="window"):
        warm_start_from_jsonl(make_estimator("logistic", window=10), Featurizer(["length"]), str(path))


def test_reads_the_real_deepscaler_passrate_file():
    rows, passes, trials, skipped = read_passrate_jsonl(SHARED_PASSRATE, limit=300)
    assert len(rows) == 300 and skipped == 0
    assert (trials >= 128).all() and ((passes >= 0) & (passes <= trials)).all()
    np.testing.assert_allclose(passes / trials, [r["pass_rate"] for r in rows], atol=1e-5)
