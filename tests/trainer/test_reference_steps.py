"""Reference steps (``depo_reference_every``): after warm-up, every N-th step rolls out GRPO's own uniform batch on
the current policy, is logged as such, and becomes the uniform reference the console measures the saving against;
with the default 0 nothing changes."""

import re

import numpy as np
import pytest
import torch
from trl import GRPOTrainer

from depo_trl import DEPOTrainer
from depo_trl.audit import read_decisions
from depo_trl.rounds import is_reference_step
from depo_trl.tasks import ControlledReward, controlled_dataset, letters_dataset, letters_reward
from depo_trl.tiny import build_model

REFERENCE_KEYS = {"depo/reference", "depo/reference_useful_group_share"}


def _logged(trainer, name):
    """``{step: value}`` of one metric over the training log entries that carry it."""
    return {h["step"]: h[name] for h in trainer.state.log_history if name in h and "depo/candidates_scored" in h}


def _trained_on_controlled(tokenizer, args):
    """A DEPOTrainer on the controlled dataset (pass rates fixed per prompt kind), trained with ``args``."""
    trainer = DEPOTrainer(model=build_model(tokenizer, seed=0), reward_funcs=ControlledReward(0), args=args,
                          train_dataset=controlled_dataset(n_per_kind=32), processing_class=tokenizer)
    trainer.train()
    return trainer


def _useful_share(record):
    """Useful-group share (0 < passes < trials, over scorable groups) of one audit record's rolled-out prompts."""
    groups = [(record["passes"][i], record["trials"][i]) for i in record["rolled_out"]]
    labelled = [(p, t) for p, t in groups if t > 0]
    return float(np.mean([0 < p < t for p, t in labelled]))


def test_is_reference_step_schedule():
    # warm-up 2, every 3: steps 5, 8, 11 (1-based), i.e. rounds starting at global_step 4, 7, 10
    assert [g for g in range(12) if is_reference_step(g, 2, 3)] == [4, 7, 10]
    assert not any(is_reference_step(g, 2, 0) for g in range(50))  # off
    assert [g for g in range(8) if is_reference_step(g, 0, 2)] == [1, 3, 5, 7]
    # One round every 2 steps (num_iterations=2): the round at global_step 4 trains steps 5 and 6, step 5 is one.
    assert [g for g in range(0, 12, 2) if is_reference_step(g, 2, 3, span=2)] == [4, 6, 10]


def test_reference_steps_roll_out_grpos_batch_at_the_configured_steps(tokenizer, config_factory):
    """warm-up 2, every 3, 8 steps: steps 5 and 8 are reference steps. They score and roll out exactly GRPO's batch
    (the prompts GRPOTrainer rolls out at that step, U of U), are not warm-up, and log their own useful share."""
    dataset = letters_dataset(64)
    rolled = {"depo": {}, "grpo": {}}

    def recording(cls, name):
        class Recording(cls):
            def _calculate_rewards(self, inputs, *args, **kwargs):
                if self.model.training:
                    rolled[name][self.state.global_step + 1] = [x["prompt"][-1]["content"]
                                                               for x in inputs[:: self.num_generations]]
                return super()._calculate_rewards(inputs, *args, **kwargs)
        return Recording

    args = config_factory(max_steps=8, depo_warmup_steps=2, depo_reference_every=3)
    depo = recording(DEPOTrainer, "depo")(model=build_model(tokenizer, seed=0), reward_funcs=letters_reward,
                                          args=args, train_dataset=dataset, processing_class=tokenizer)
    depo.train()
    grpo = recording(GRPOTrainer, "grpo")(model=build_model(tokenizer, seed=0), reward_funcs=letters_reward,
                                          args=config_factory(grpo=True, max_steps=8), train_dataset=dataset,
                                          processing_class=tokenizer)
    grpo.train()

    steps = list(range(1, 9))
    assert [_logged(depo, "depo/reference")[s] for s in steps] == [0, 0, 0, 0, 1, 0, 0, 1]
    assert [_logged(depo, "depo/warmup")[s] for s in steps] == [1, 1, 0, 0, 0, 0, 0, 0]  # reference is not warm-up
    scored = _logged(depo, "depo/candidates_scored")
    assert [scored[s] for s in steps] == [4, 4, 16, 16, 4, 16, 16, 4]  # GRPO's U (no candidates) vs K x U
    assert all(v == 4 for v in _logged(depo, "depo/prompts_rolled_out").values())
    # GRPO's own batch, row for row: warm-up and reference steps roll out what GRPOTrainer does at that step.
    for step in (1, 2, 5, 8):
        assert rolled["depo"][step] == rolled["grpo"][step], step
    assert rolled["depo"][3] != rolled["grpo"][3]  # a filtering step draws its own candidates
    assert all(prompt for prompt in rolled["depo"][5])  # real rows, not the discarded-batch placeholder

    records = read_decisions(args.output_dir)
    assert [r["reference"] for r in records] == [s in (5, 8) for s in steps]
    assert [r["warmup"] for r in records] == [s <= 2 for s in steps]
    for record in records[4], records[7]:
        assert record["decision"] == ["band"] * 4 and record["rolled_out"] == [0, 1, 2, 3]
        assert record["dataset_index"] is not None  # read back from TRL's sampler, as for warm-up
    # depo/reference_useful_group_share only on reference steps, equal to that round's own useful share.
    share = _logged(depo, "depo/reference_useful_group_share")
    assert sorted(share) == [5, 8]
    for step in (5, 8):
        assert share[step] == pytest.approx(_useful_share(records[step - 1]))
        assert share[step] == _logged(depo, "depo/useful_group_share")[step]
    assert depo.depo_estimator.n_updates_ == 8  # the estimator learned from the reference rounds too


def test_reference_share_is_averaged_over_reference_rounds_only(tokenizer, config_factory):
    """TRL averages each metric over the values appended in a logging window: with logging_steps=2 a window holding
    one filtering and one reference round logs depo/reference 0.5, and the reference share of the reference round
    alone, while depo/useful_group_share is the mean of both rounds."""
    args = config_factory(max_steps=6, depo_warmup_steps=2, depo_reference_every=2, logging_steps=2,
                          per_device_train_batch_size=32)
    trainer = _trained_on_controlled(tokenizer, args)
    records = read_decisions(args.output_dir)
    assert [r["reference"] for r in records] == [False, False, False, True, False, True]  # steps 4 and 6
    reference, share = _logged(trainer, "depo/reference"), _logged(trainer, "depo/reference_useful_group_share")
    useful = _logged(trainer, "depo/useful_group_share")
    assert reference == {2: 0.0, 4: 0.5, 6: 0.5}
    assert sorted(share) == [4, 6]
    for end in (4, 6):
        filtering, ref = _useful_share(records[end - 2]), _useful_share(records[end - 1])
        assert share[end] == pytest.approx(ref)
        assert useful[end] == pytest.approx((filtering + ref) / 2)
    assert any(_useful_share(records[e - 2]) != _useful_share(records[e - 1]) for e in (4, 6))  # the test can tell


def test_console_measures_the_saving_against_the_reference_steps(tokenizer, config_factory):
    args = config_factory(max_steps=9, depo_warmup_steps=2, depo_reference_every=3, per_device_train_batch_size=32,
                          depo_console="depo", depo_console_every=3)
    trainer = _trained_on_controlled(tokenizer, args)
    shares = _logged(trainer, "depo/reference_useful_group_share")
    assert sorted(shares) == [5, 8]
    warmup = np.mean([v for s, v in _logged(trainer, "depo/useful_group_share").items() if s <= 2])
    lines = [line for line in trainer.depo_console.lines if line.startswith("[DEPO]")]
    assert [int(re.match(r"\[DEPO\] step (\d+)", line).group(1)) for line in lines] == [3, 6, 9]
    # Step 3: no reference step yet, so the warm-up reference (as before); steps 6 and 9: the reference steps'.
    assert f"vs warm-up's {warmup:.0%} useful |" in lines[0]
    assert f"vs uniform's {shares[5]:.0%} useful (reference steps, 8 groups) |" in lines[1]
    mean = (shares[5] + shares[8]) / 2
    assert f"vs uniform's {mean:.0%} useful (reference steps, 16 groups) |" in lines[2]
    # The saving is computed against that share: useful groups / share x G - completions generated.
    stats = trainer.depo_stats
    saved = stats.useful_groups / mean * 4 - stats.completions_generated
    assert re.search(rf"saved ~{saved:.0f} vs uniform's", lines[2])
    table = trainer.depo_console.lines[-1]
    assert re.search(rf"uniform reference: reference steps useful\s+{mean:.0%} of 16 groups \(2 reference steps\)",
                     table)
    assert re.search(r"completions saved vs that reference\s+~-?\d+ \(uniform's useful share measured on the same "
                     r"policy, at the reference steps\)", table)
    assert re.search(r"warm-up [\d.]+ s/step, filtering [\d.]+ s/step, reference [\d.]+ s/step", table)
    # depo-trl report reads the same reference from trainer_state.json.
    from depo_trl import report

    trainer.save_state()
    summary = report.compute_summary(report.load_run(args.output_dir))
    assert summary["uniform_reference_source"] == "reference steps"
    assert summary["uniform_reference"] == pytest.approx(mean)
    assert (summary["reference_steps"], summary["reference_groups"]) == (2, 16)
    assert "measured at 2 reference steps (~16 groups" in report.format_summary(summary)


def test_default_zero_changes_nothing(tokenizer, config_factory, tmp_path):
    """depo_reference_every=0 logs no reference key and writes no audit field; a schedule whose first reference step
    lies beyond the run trains bit-identically to it and adds only depo/reference (0 throughout)."""
    from depo_trl import DEPOConfig

    assert DEPOConfig.__dataclass_fields__["depo_reference_every"].default == 0
    dataset = letters_dataset(64)
    runs = {}
    for every in (0, 100):
        args = config_factory(max_steps=4, depo_warmup_steps=1, depo_reference_every=every,
                              output_dir=str(tmp_path / f"every{every}"))
        trainer = DEPOTrainer(model=build_model(tokenizer, seed=0), reward_funcs=letters_reward, args=args,
                              train_dataset=dataset, processing_class=tokenizer)
        trainer.train()
        runs[every] = (trainer, read_decisions(args.output_dir))
    off, never = runs[0][0], runs[100][0]
    keys = {every: set().union(*(h for h in t.state.log_history if "depo/candidates_scored" in h))
            for every, (t, _) in runs.items()}
    assert not keys[0] & REFERENCE_KEYS
    assert keys[100] - keys[0] == {"depo/reference"}
    assert set(_logged(never, "depo/reference").values()) == {0.0}
    assert all("reference" not in r for r in runs[0][1]) and all(r["reference"] is False for r in runs[100][1])
    for key in ("loss", "reward", "depo/candidates_scored", "depo/useful_group_share", "depo/predicted_pass_rate"):
        assert _logged(off, key) == _logged(never, key), key
    for (n, p), (_, q) in zip(off.model.named_parameters(), never.model.named_parameters()):
        assert torch.equal(p, q), n
    # The discarded batches are still not loaded when reference steps are off.
    assert off.depo_loader_dataset.rows_skipped > 0 and never.depo_loader_dataset.rows_skipped == 0


def test_the_exploration_yield_counts_only_the_rounds_the_engine_chose(tokenizer, config_factory):
    """The trainer hands each filtering round's reasons to the engine: its exploration-yield counts are exactly
    those recomputed from the audit trail's filtering rounds (warm-up and reference rounds, GRPO's own batches, are
    evidence for neither side), and the ratio so far is logged as depo/exploration_yield every step."""
    args = config_factory(max_steps=8, depo_warmup_steps=2, depo_reference_every=3, depo_exploration=0.3,
                          per_device_train_batch_size=32)
    trainer = _trained_on_controlled(tokenizer, args)
    records = read_decisions(args.output_dir)
    explore, policy, filtering_rounds = np.zeros(2), np.zeros(2), 0
    for record in records:
        if record["warmup"] or record.get("reference"):
            continue
        filtering_rounds += 1
        explore *= 0.98
        policy *= 0.98
        for i in record["rolled_out"]:
            p, t = record["passes"][i], record["trials"][i]
            side = explore if record["decision"][i] == "explore" else policy
            side += (t > 0, t > 0 and 0 < p < t)
    assert filtering_rounds == 4 and explore[0] > 0  # the test sees exploration picks to count
    yield_ = trainer.depo_selector.exploration_yield
    np.testing.assert_allclose(yield_.explore_, explore)
    np.testing.assert_allclose(yield_.policy_, policy)
    logged = _logged(trainer, "depo/exploration_yield")
    assert sorted(logged) == list(range(1, 9)) and logged[1] == logged[2] == 1.0  # no evidence during warm-up
    assert logged[8] == pytest.approx(yield_.ratio()) and logged[8] != 1.0
