"""The proving ground's task: classes as cells of shift x length, regime mixes, the noisy teacher, disjoint sets."""

import random

import pytest

from benchmarks import pg_task as T


def test_classes_partition_every_cell_and_beyond_is_never_taught():
    spec = T.TaskSpec()
    cells = {c: set(spec.cells(c)) for c in T.CLASSES}
    assert not (cells["solved"] & cells["frontier"]) and not (cells["frontier"] & cells["beyond"])
    assert set(spec.cells()) == cells["solved"] | cells["frontier"] | cells["beyond"]
    assert all(n > spec.warm_max_length for _, n in cells["beyond"])  # the warm start never shows these lengths
    assert all(s == 1 for s, _ in cells["solved"])  # the only shift taught without slips
    assert spec.seed_warm_error_rates[0] == 0.0 and min(spec.seed_warm_error_rates[1:]) > 0
    assert spec.difficulty(3, spec.warm_max_length) == "frontier"
    assert spec.difficulty(1, spec.warm_max_length + 1) == "beyond"


def test_one_slip_rate_per_shift_is_required():
    with pytest.raises(ValueError, match="one slip rate per shift"):
        T.TaskSpec(seed_warm_error_rates=(0.0, 0.1))


@pytest.mark.parametrize("regime", sorted(T.REGIMES))
def test_sets_follow_the_regime_mix_and_are_disjoint(regime):
    spec = T.TaskSpec()
    pool, heldout = T.make_sets(spec, regime, 1000, 200, seed=3)
    assert len(pool) == 1000 and len(heldout) == 200
    assert not ({r["prompt"] for r in pool} & {r["prompt"] for r in heldout})
    for rows in (pool, heldout):
        for cls, share in T.REGIMES[regime].items():
            got = sum(r["cls"] == cls for r in rows) / len(rows)
            # rounding is per cell: a class is off by at most one row per cell
            assert got == pytest.approx(share, abs=len(spec.cells(cls)) / len(rows)), (cls, got, share)
    for r in pool[:50]:
        assert r["cls"] == spec.difficulty(r["shift"], r["length"])
        assert T.reward(r["trace"], r["answer"]) == 1.0
    other = T.make_sets(spec, regime, 1000, 200, seed=4)[0]  # another seed draws another pool
    assert {r["prompt"] for r in other} != {r["prompt"] for r in pool}


def test_noisy_teacher_slips_at_its_rate_and_keeps_answer_consistent_with_working():
    rng = random.Random(0)
    word = "abcdefg"
    traces = [T.noisy_trace_of(2, word, 0.3, rng) for _ in range(2000)]
    slips = sum(w != c for t in traces for w, c in zip(t.split(T.WORK_END)[0], T.shifted(word, 2))) / (2000 * 7)
    assert slips == pytest.approx(0.3, abs=0.02)
    for t in traces[:100]:
        working, answer = t.split(T.WORK_END)
        assert answer == working[::-1]
    assert all(T.noisy_trace_of(2, word, 0.0, rng) == T.trace_of(2, word) for _ in range(20))
    # a slipped working gives a wrong answer: the reward checks the answer against the exact shift
    slipped = next(t for t in traces if t != T.trace_of(2, word))
    assert T.reward(slipped, T.answer_of(2, word)) == 0.0


def test_cell_oracle_knows_each_cell_not_each_prompt():
    """ORACLE-cell scores a candidate by the measured mean pass rate of its (shift, length) cell's reference prompts:
    every candidate of one cell gets the same score, and the references are prompts of that cell."""
    import torch

    from benchmarks import pg_methods as M
    from benchmarks.proving_ground import SIZES

    spec = T.TaskSpec()
    size = dict(SIZES["quick"])
    pool, _ = T.make_sets(spec, "easy", size["n_pool"], size["n_heldout"], seed=0)
    tokenizer, model = T.build(spec, seed=0)
    arm = M.SelectorArm(model, T.Codec(tokenizer), pool, spec, size, 0, oracle=True, oracle_cell=True)
    assert all((r["shift"], r["length"]) == cell for cell, refs in arm.cell_reference.items() for r in refs)
    indices = list(range(40))
    torch.manual_seed(0)
    _, scores, _, _ = arm._score(indices)
    by_cell = {}
    for i, score in zip(indices, scores):
        by_cell.setdefault((pool[i]["shift"], pool[i]["length"]), set()).add(float(score))
    assert len(by_cell) > 1 and all(len(values) == 1 for values in by_cell.values())
    assert arm.ledger.completions == 0  # the oracle's measurement is not counted as the arm's cost


def test_depo_meta_reads_the_cell_as_a_metadata_column():
    """DEPO-meta's selector asks for the ``cell`` column; the arm hands it the (shift, length) cell of each candidate,
    so candidates of one cell share the metadata one-hot block and different cells do not."""
    import numpy as np

    from benchmarks import pg_methods as M
    from benchmarks.proving_ground import METHODS, SIZES

    spec = T.TaskSpec()
    size = dict(SIZES["quick"])
    pool, _ = T.make_sets(spec, "balanced", size["n_pool"], size["n_heldout"], seed=0)
    tokenizer, model = T.build(spec, seed=0)
    arm = M.SelectorArm(model, T.Codec(tokenizer), pool, spec, size, 0, **METHODS["DEPO-meta"][1])
    assert arm.selector.metadata_columns == ["cell"]
    indices = list(range(60))
    scores, _, _, features = arm._score(indices)
    onehot = features[:, -64:]  # the metadata group comes last: 64 buckets
    assert np.allclose(onehot.sum(axis=1), 1.0)
    cells = [f"{pool[i]['shift']}-{pool[i]['length']}" for i in indices]
    bucket = {c: int(np.argmax(row)) for c, row in zip(cells, onehot)}
    assert all(int(np.argmax(row)) == bucket[c] for c, row in zip(cells, onehot))
    assert len(set(bucket.values())) == len(bucket) > 1  # the chosen hash seed keeps the cells apart
