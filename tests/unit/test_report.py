"""`depo-trl report` on hand-written log histories: totals, the warm-up uniform reference, checkpoints, errors."""

import json
import os

import pytest

from depo_trl import report


def _entry(step, warmup, useful, candidates=32.0, rolled=8.0, predicted=0.4, observed=0.5):
    return {
        "step": step,
        "depo/warmup": warmup,
        "depo/candidates_scored": candidates,
        "depo/prompts_rolled_out": rolled,
        "depo/skipped_share": 1 - rolled / candidates,
        "depo/in_band_share": 0.9,
        "depo/explored_share": 0.1,
        "depo/useful_group_share": useful,
        "depo/predicted_pass_rate": predicted,
        "depo/observed_pass_rate": observed,
        "depo/brier": 0.2,
    }


def _write_run(folder, logs, stats=None, global_step=None):
    folder.mkdir(parents=True, exist_ok=True)
    state = {"global_step": global_step or logs[-1]["step"], "log_history": logs + [{"step": 99, "train_loss": 0.1}]}
    (folder / "trainer_state.json").write_text(json.dumps(state))
    if stats is not None:
        (folder / "depo_state.json").write_text(json.dumps({"format": 1, "stats": stats}))


def _run_logs():
    # 2 warm-up steps (8 uniform prompts each, half useful), then 4 filtered steps (32 scored, 8 rolled, 3/4 useful)
    warm = [_entry(s, 1.0, 0.5, candidates=8.0) for s in (1, 2)]
    return warm + [_entry(s, 0.0, 0.75) for s in (3, 4, 5, 6)]


STATS = {
    "rounds": 6,
    "candidates_scored": 144,
    "prompts_rolled_out": 48,
    "prompts_skipped": 96,
    "completions_generated": 384,
    "useful_groups": 32,
    "labelled_groups": 48,
    "estimator_failures": 0,
    "skipped_by_reason": {"too_easy": 10, "too_hard": 70, "in_band_not_needed": 16},
}


def test_summary_numbers_from_exact_totals(tmp_path):
    _write_run(tmp_path, _run_logs(), STATS)
    summary = report.compute_summary(report.load_run(str(tmp_path)))
    assert summary["exact_totals"] and summary["group_size"] == 8
    assert summary["uniform_reference"] == 0.5 and summary["uniform_reference_windows"] == 2
    assert summary["useful_share_after_warmup"] == 0.75
    # uniform needs useful / 0.5 = 64 prompt groups = 512 completions for the same 32 useful groups
    assert summary["uniform_prompts_for_same_useful"] == 64
    text = report.format_summary(summary)
    assert "uniform sampling would need ~512 for the same 32 useful groups: ~128 saved (25.0%)" in text
    assert "too hard: 70" in text and "Calibration after warm-up: mean predicted pass rate 0.400 vs observed 0.500" in text


def test_cumulative_estimate_matches_totals_without_depo_state(tmp_path):
    _write_run(tmp_path, _run_logs())
    run = report.load_run(str(tmp_path))
    cum = report.cumulative(run)
    assert cum["candidates"][-1] == 2 * 8 + 4 * 32 and cum["rolled_out"][-1] == 48 and cum["useful"][-1] == 32
    text = report.format_summary(report.compute_summary(run))
    assert "assumed one generation round per optimizer step" in text and "Prompt groups: 48 rolled out" in text


def test_logging_windows_mixing_warmup_give_no_uniform_reference(tmp_path):
    logs = [_entry(4, 0.5, 0.6), _entry(8, 0.0, 0.8)]  # logging_steps=4, warm-up ends mid-window
    _write_run(tmp_path, logs, dict(STATS, rounds=8))
    text = report.format_summary(report.compute_summary(report.load_run(str(tmp_path))))
    assert "Uniform reference: none" in text and "logging_steps <= depo_warmup_steps" in text


def test_latest_checkpoint_is_read(tmp_path):
    _write_run(tmp_path / "checkpoint-2", _run_logs()[:2])
    _write_run(tmp_path / "checkpoint-10", _run_logs(), STATS)
    _write_run(tmp_path / "checkpoint-9", _run_logs()[:3])
    run = report.load_run(str(tmp_path))
    assert run.source.endswith("checkpoint-10/trainer_state.json") and run.stats == STATS
    paths = report.write_report(str(tmp_path))
    assert all((tmp_path / report.REPORT_DIR / name).stat().st_size > 0 for name in report.PLOTS)
    assert paths["summary"].endswith("summary.txt")


def test_errors_are_actionable(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="trainer.save_state"):
        report.load_run(str(tmp_path))
    _write_run(tmp_path, [{"step": 1, "loss": 0.3}])
    with pytest.raises(ValueError, match="no DEPO metrics"):
        report.load_run(str(tmp_path))
    assert report.main([str(tmp_path / "missing")]) == 2 and "is not a folder" in capsys.readouterr().err


def test_reward_and_held_out_reward_at_start_and_end(tmp_path):
    logs = [{**_entry(s, 1.0 if s <= 2 else 0.0, 0.5), "reward": 0.1 * s} for s in range(1, 9)]
    evals = [{"step": 0, "eval_reward": 0.2}, {"step": 8, "eval_reward": 0.45}]
    _write_run(tmp_path, evals[:1] + logs + evals[1:], STATS)
    summary = report.compute_summary(report.load_run(str(tmp_path)))
    assert summary["reward_windows"] == 2 and summary["reward_first_steps"] == (1, 2)
    assert summary["reward_first"] == pytest.approx(0.15) and summary["reward_last"] == pytest.approx(0.75)
    assert summary["eval_rewards"] == [(0, 0.2), (8, 0.45)]
    text = report.format_summary(summary)
    assert "Mean reward of the training batches: 0.150 (steps 1-2) -> 0.750 (steps 7-8)" in text
    assert "Held-out reward (eval_reward, unfiltered; the accuracy for a 0/1 reward): step 0: 0.200, step 8: 0.450." in text
    paths = report.write_report(str(tmp_path))
    assert paths["reward.png"].endswith("reward.png")


def test_reference_steps_are_the_uniform_reference_when_logged(tmp_path):
    """Warm-up at 50% useful; steps 5 and 8 reference steps at 20% and 40%: the report measures against their mean
    (30%, 2 steps, 16 groups), says where it comes from, and leaves them out of the useful share after warm-up."""
    logs = _run_logs() + [_entry(7, 0.0, 0.75), _entry(8, 0.0, 0.4, candidates=8.0)]
    logs[4] = _entry(5, 0.0, 0.2, candidates=8.0)
    for entry in logs:
        entry["depo/reference"] = 0.0
    for entry, share in ((logs[4], 0.2), (logs[7], 0.4)):
        entry["depo/reference"], entry["depo/reference_useful_group_share"] = 1.0, share
    _write_run(tmp_path, logs, dict(STATS, rounds=8))
    summary = report.compute_summary(report.load_run(str(tmp_path)))
    assert summary["uniform_reference_source"] == "reference steps"
    assert summary["uniform_reference"] == pytest.approx(0.3)
    assert (summary["reference_steps"], summary["reference_groups"]) == (2, 16)
    assert summary["useful_share_after_warmup"] == 0.75  # steps 3, 4, 6, 7: the reference steps aside
    assert summary["uniform_prompts_for_same_useful"] == pytest.approx(32 / 0.3)
    text = report.format_summary(summary)
    assert "Uniform reference: 30.0% useful, measured at 2 reference steps (~16 groups" in text
    assert "after warm-up (reference steps aside)." in text and "logged warm-up windows" not in text
    written = report.write_report(str(tmp_path))  # the plots label the reference by its source
    assert all(os.path.isfile(written[name]) for name in (*report.PLOTS, "summary"))
