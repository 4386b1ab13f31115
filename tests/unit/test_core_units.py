"""Selection, history, candidate stream and safe state: the trainer's plain-numpy parts."""

import numpy as np
import pytest

from depo_trl.candidates import CandidateStream
from depo_trl.history import PromptHistory, prompt_key
from depo_trl.selection import expected_usefulness, select_in_band
from depo_trl.state import load_state, save_state


def test_expected_usefulness():
    assert expected_usefulness(np.array([0.0, 1.0]), 8).tolist() == [0.0, 0.0]
    assert expected_usefulness(np.array([0.5]), 2)[0] == pytest.approx(0.5)
    assert expected_usefulness(np.array([0.5]), 8)[0] == pytest.approx(1 - 2 / 256)


def test_selection_prefers_band_then_fills():
    rng = np.random.default_rng(0)
    p = np.array([0.01, 0.5, 0.99, 0.4, 0.02, 0.97, 0.6, 0.03])
    sel = select_in_band(p, 3, 8, 0.15, 0.85, exploration=0.0, rng=rng)
    assert sorted(sel.indices.tolist()) == [1, 3, 6] and set(sel.reasons) == {"band"}
    sel = select_in_band(p, 5, 8, 0.15, 0.85, exploration=0.0, rng=rng)  # only 3 in band: 2 filled
    assert len(set(sel.indices.tolist())) == 5 and sel.n_filled == 2


def test_selection_exploration_share_is_exact_in_expectation():
    rng = np.random.default_rng(1)
    p = np.concatenate([np.full(50, 0.5), np.full(50, 0.99)])
    explored = [select_in_band(p, 4, 8, 0.15, 0.85, 0.1, rng).n_explored for _ in range(4000)]
    assert np.mean(explored) / 4 == pytest.approx(0.1, abs=0.01)


def test_history_tracks_and_bounds_memory():
    h = PromptHistory(max_prompts=3)
    h.update([1, 2], [8, 0], [8, 8])
    h.update([1], [4, ], [8])
    got = h.lookup([1, 2, 99])
    assert got["seen"].tolist() == [1, 1, 0]
    assert got["count"].tolist() == [2, 1, 0]
    assert got["last_rate"][:2].tolist() == [0.5, 0.0]
    assert got["rounds_since"][:2].tolist() == [0, 1]
    h.update([3], [1], [8])
    h.update([4], [1], [8])  # full: the least recently seen (2) is forgotten
    assert len(h) == 3
    assert h.lookup([2])["seen"][0] == 0 and h.lookup([4])["seen"][0] == 1


def test_prompt_key_is_stable_for_chat_and_text():
    chat = [{"role": "user", "content": "hi"}]
    assert prompt_key(chat) == prompt_key([{"content": "hi", "role": "user"}])
    assert prompt_key("a") != prompt_key("b")


def test_candidate_stream_covers_every_prompt_each_epoch():
    stream = CandidateStream(10, seed=3)
    drawn = np.concatenate([stream.next(4) for _ in range(5)])  # 20 draws = 2 epochs, rounds straddle epochs
    for round_start in range(0, 20, 4):
        assert len(set(drawn[round_start:round_start + 4])) == 4  # distinct within a round
    counts = np.bincount(drawn, minlength=10)
    assert counts.min() == 2 and counts.max() == 2


def test_candidate_stream_resumes_exactly():
    a = CandidateStream(7, seed=1)
    a.next(3), a.next(3)
    b = CandidateStream(7, seed=1)
    b.load_state_dict(a.state_dict())
    assert [a.next(3).tolist() for _ in range(4)] == [b.next(3).tolist() for _ in range(4)]


def test_state_files_hold_no_pickle(tmp_path):
    state = {"a": np.arange(3), "b": {"c": 1.5, "d": [np.ones(2), "x"]}, "rng": np.random.default_rng(0).bit_generator.state}
    save_state(state, str(tmp_path))
    loaded = load_state(str(tmp_path))
    assert loaded["a"].tolist() == [0, 1, 2] and loaded["b"]["c"] == 1.5 and loaded["b"]["d"][1] == "x"
    rng = np.random.default_rng()
    rng.bit_generator.state = loaded["rng"]
    assert rng.random() == np.random.default_rng(0).random()
    assert load_state(str(tmp_path / "missing")) is None


def test_history_eviction_keeps_recent_prompts_and_survives_a_round_trip():
    h = PromptHistory(max_prompts=1000)
    for first in range(0, 5000, 100):
        h.update(np.arange(first, first + 100), np.full(100, 3), np.full(100, 8))
    assert len(h) <= 1000
    recent = h.lookup(np.arange(4900, 5000))
    assert recent["seen"].all() and (recent["last_rate"] == 3 / 8).all()
    assert h.lookup(np.arange(0, 100))["seen"].sum() == 0  # the oldest are forgotten
    restored = PromptHistory(max_prompts=1000)
    restored.load_state_dict(h.state_dict())
    keys = np.arange(3000, 5000)
    for name, values in h.lookup(keys).items():
        np.testing.assert_array_equal(restored.lookup(keys)[name], values, err_msg=name)
    restored.update(np.arange(5000, 5100), np.full(100, 8), np.full(100, 8))  # keeps working after restore
    assert restored.lookup(np.arange(5000, 5100))["seen"].all() and len(restored) <= 1000


def test_rank_rows_lays_out_contiguous_groups_of_separate_objects():
    from depo_trl.candidates import rank_rows

    rows = [{"prompt": "a", "tags": ["x"]}, {"prompt": "b", "tags": ["y"]}]
    slices = [rank_rows(rows, 3, 2, rank) for rank in range(2)]
    together = slices[0] + slices[1]
    assert [r["prompt"] for r in together] == ["a", "a", "a", "b", "b", "b"] and len(slices[0]) == 3
    together[0]["tags"].append("written by TRL")
    assert together[1]["tags"] == ["x"] and rows[0]["tags"] == ["x"]  # no row shares a container


def test_trl_columns_hand_trl_exactly_its_own_columns():
    from depo_trl.candidates import TrlColumns

    columns = TrlColumns(remove_unused_columns=True)
    assert columns.widen(["prompt"], ["level", "prompt"]) == ["prompt", "level"]
    drawn = [{"prompt": "p", "level": 3, "answer": "4"}]
    assert columns.for_trl(drawn, drawn=True) == [{"prompt": "p"}]
    from_loader = [{"prompt": "p", "level": 3}]  # TRL's dataloader kept 'level' because DEPO asked it to
    assert columns.for_trl(from_loader, drawn=False) == [{"prompt": "p"}]
    assert TrlColumns(remove_unused_columns=False).for_trl(drawn, drawn=True) is drawn


def test_pass_labeller_counts_passes_and_warns_once_each():
    from depo_trl.labels import PassLabeller

    labeller = PassLabeller(["correct", "format"], threshold=0.5)
    always = np.ones((2, 4, 2))  # every completion passes: the threshold never splits
    notes = [labeller(always, [0])[2] for _ in range(6)]
    assert [len(n) for n in notes] == [0, 0, 0, 0, 1, 0] and "cannot tell prompts apart" in notes[4][0]
    values = np.full((3, 4, 2), np.nan)
    values[0, :, 0] = [1, 0, 1, 1]  # 'correct' applies: 3 of 4 pass
    values[1, :, 1] = [0, 0, 0, 1]  # only 'format' applies, but it is not a pass reward here
    passes, trials, notes = labeller(values, [0])
    assert passes.tolist() == [3, 0, 0] and trials.tolist() == [4, 0, 0]
    assert len(notes) == 1 and "2 of 3 prompts" in notes[0]
    assert labeller(values, [0])[2] == []  # said once per run
    passes, trials, _ = labeller(values, [0, 1])  # 'format' asked next: it labels the second group
    assert passes.tolist() == [3, 1, 0] and trials.tolist() == [4, 4, 0]


def test_rollout_cap_skips_a_prompt_only_within_its_walk_pass():
    from depo_trl.rounds import RolloutCounter

    assert RolloutCounter(None).skip_rule(lambda row: row["key"]) is None
    counter = RolloutCounter(cap=1)
    skip = counter.skip_rule(lambda row: row["key"])
    counter.count([7], [0])
    assert skip({"key": 7}, 0) and not skip({"key": 7}, 1) and not skip({"key": 8}, 0)
