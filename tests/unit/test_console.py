"""The DEPO console: one compact line every few steps and a summary table instead of TRL's per-step dicts, while
every metric still reaches trainer_state.json; `depo_console: trl` keeps TRL's console."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402
from transformers.trainer_callback import PrinterCallback, ProgressCallback  # noqa: E402

from depo_trl.console import DEPOConsole  # noqa: E402
from depo_trl.scripts.depo import main, parse_args  # noqa: E402

TINY = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "depo" / "config_letters.yaml"
LINE = re.compile(
    r"^\[DEPO\] step (\d+)/(\d+)( \(warm-up\)| \(filtering from step \d+\))? \| reward (\S+) \| "
    r"rolled out (\d+)/(\d+) \| useful (\d+%|n/a) \| "
    r"pass rate pred (\S+) obs (\S+) \| "
    r"completions (\d+)(, saved ~(-?\d+) vs warm-up's \d+% useful)? \| [\d.]+ s/step$"
)


def _window(step, warmup, useful, rolled=8, scored=32, reward=0.5, pred=0.5, obs=0.5):
    return {"reward": reward, "depo/warmup": warmup, "depo/prompts_rolled_out": rolled, "depo/candidates_scored": scored,
            "depo/useful_group_share": useful, "depo/predicted_pass_rate": pred, "depo/observed_pass_rate": obs,
            "loss": 0.1, "completions/mean_length": 2.0}


def test_lines_every_n_steps_with_warmup_reference_and_summary():
    args = SimpleNamespace(disable_tqdm=True, num_generations=8, gradient_accumulation_steps=1,
                           steps_per_generation=1, num_iterations=1)
    state = SimpleNamespace(global_step=0, max_steps=6, is_world_process_zero=True)
    written = []
    console = DEPOConsole(every=2, write=written.append)
    console.on_train_begin(args, state, None)
    # steps 1-2 warm-up at 50% useful; steps 3-6 filtered at 100% useful
    for step, (warm, useful, reward) in enumerate([(1, .5, .2), (1, .5, .3), (0, 1., .4), (0, 1., .5), (0, 1., .6), (0, 1., .7)], 1):
        state.global_step = step
        console.on_log(args, state, None, logs=_window(step, warm, useful, reward=reward))
    state.global_step = 6
    console.on_log(args, state, None, logs={"eval_reward": 0.65, "eval_rewards/letters_reward/mean": 0.65})
    console.on_log(args, state, None, logs={"train_runtime": 1.0, "train_loss": 0.1})  # ignored
    console.on_train_end(args, state, None)
    lines = [LINE.match(line) for line in written if line.startswith("[DEPO]")]
    assert [int(m.group(1)) for m in lines] == [2, 4, 6] and all(lines)
    assert lines[0].group(3) == " (warm-up)" and lines[1].group(3) is None
    assert lines[0].group(4) == "0.25" and lines[2].group(4) == "0.65"  # mean reward over the two windows
    # completions: 6 rounds x 8 prompts x 8 = 384; saved vs uniform at 50% useful: useful = 2*4 + 4*8 = 40 groups,
    # uniform needs 40 / 0.5 = 80 groups = 640 completions -> 256 saved; no reference figure during warm-up
    assert lines[0].group(10) == "128" and lines[0].group(11) is None
    assert lines[2].group(10) == "384" and lines[2].group(12) == "256"
    assert any(line.startswith("[eval] step 6 | held-out reward 0.650 | letters_reward 0.650") for line in written)
    table = written[-1]
    assert table.startswith("DEPO summary (totals estimated from logged means")
    assert re.search(r"completions saved vs that reference\s+~256 \(a reference", table)
    assert re.search(r"uniform reference: warm-up useful\s+50% of 16 groups \(2 warm-up steps\)", table)
    assert re.search(r"wall time\s+[\d.]+ s \([\d.]+ s/step; warm-up [\d.]+ s/step, filtering [\d.]+ s/step\)", table)
    assert re.search(r"reward, first -> last 2 windows\s+0.25 -> 0.65", table)
    assert re.search(r"held-out reward, first -> last eval\s+0.650 -> 0.650", table)
    assert not any("loss" in line for line in written)  # no full dict printed


def test_every_must_be_positive():
    with pytest.raises(ValueError, match="every N >= 1"):
        DEPOConsole(every=0)
    from depo_trl import DEPOConfig

    with pytest.raises(ValueError, match="depo_console='rich'"):
        DEPOConfig("out", depo_console="rich", use_cpu=True, bf16=False)


def _train(tmp_path, *flags):
    out = tmp_path / "run"
    parsed = parse_args(["--config", str(TINY), "--max_steps", "8", "--depo_warmup_steps", "2", "--output_dir", str(out),
                         "--dataset_max_samples", "128", *flags])
    return main(*parsed), out


def test_train_script_prints_depo_lines_and_keeps_every_metric(tmp_path, capsys):
    trainer, out = _train(tmp_path, "--depo_console_every", "3")
    printed = capsys.readouterr()
    text = printed.out + printed.err
    lines = [line for line in text.splitlines() if line.startswith("[DEPO]")]
    assert [int(LINE.match(line).group(1)) for line in lines] == [3, 6, 8], lines
    assert "DEPO summary (exact totals" in text and re.search(r"prompts rolled out\s+64 ", text)
    assert text.count("DEPO summary") == 1 and "DEPO: 8 rounds" not in text  # one summary at the end, not two
    assert "'depo/brier'" not in text and "{'loss'" not in text  # TRL's per-step dicts are gone
    assert not any(type(cb) in (ProgressCallback, PrinterCallback) for cb in trainer.callback_handler.callbacks)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert sum("depo/useful_group_share" in e and "loss" in e for e in history) == 8  # full metrics still logged


def test_trl_console_flag_keeps_trl_printing(tmp_path, capsys):
    trainer, _ = _train(tmp_path, "--depo_console", "trl", "--max_steps", "3")
    text = capsys.readouterr()
    assert "'depo/candidates_scored'" in text.out + text.err and "[DEPO] step" not in text.out + text.err
    assert not any(isinstance(cb, DEPOConsole) for cb in trainer.callback_handler.callbacks)


def _run_console(windows, every):
    args = SimpleNamespace(disable_tqdm=True, num_generations=8, gradient_accumulation_steps=1,
                           steps_per_generation=1, num_iterations=1)
    state = SimpleNamespace(global_step=0, max_steps=len(windows), is_world_process_zero=True)
    written = []
    console = DEPOConsole(every=every, write=written.append)
    console.on_train_begin(args, state, None)
    for step, window in enumerate(windows, 1):
        state.global_step = step
        console.on_log(args, state, None, logs=window)
    console.on_train_end(args, state, None)
    return written


def test_a_line_never_averages_warmup_and_filtering_round_counts():
    """Warm-up rounds roll out 8 of 8, filtering rounds 8 of 32: a line spanning both says 8/32, not 8/20."""
    windows = [_window(1, 1, .5, scored=8), _window(2, 1, .5, scored=8), _window(3, 0, 1.), _window(4, 0, 1.)]
    written = _run_console(windows, every=4)
    match = LINE.match(written[0])
    assert match and match.group(3) == " (filtering from step 3)", written[0]
    assert (match.group(5), match.group(6)) == ("8", "32")


def test_a_warmup_only_run_states_one_reason_for_no_saving():
    """Every round warm-up: the table gives the reference and says why there is no saving, without contradicting
    itself ("n/a (no warm-up reference)" beside a warm-up reference)."""
    written = _run_console([_window(s, 1, .5, scored=8) for s in (1, 2, 3)], every=3)
    table = written[-1]
    assert re.search(r"uniform reference: warm-up useful\s+50% of 24 groups \(3 warm-up steps\)", table)
    assert re.search(r"completions saved vs that reference\s+n/a \(no filtering round: every round was warm-up\)",
                     table)
    assert "no warm-up reference" not in table
    assert LINE.match(written[0]).group(3) == " (warm-up)" and ", saved" not in written[0]


def _reference_window(step, share, reference=1.0, useful=None, scored=8):
    """A logged window holding reference steps (``reference``: their share of its rounds)."""
    window = _window(step, 0, share if useful is None else useful, scored=scored)
    window.update({"depo/reference": reference, "depo/reference_useful_group_share": share})
    return window


def test_reference_steps_replace_the_warmup_reference_and_are_named():
    """Warm-up at 50% useful, then filtering at 100% with one reference step at 25%: the line measures the saving
    against the reference step's 25% and names it; its rolled-out and useful figures leave the reference window out
    (it measured uniform sampling, not DEPO); the table gives the reference's size."""
    windows = [_window(1, 1, .5, scored=8), _window(2, 1, .5, scored=8), _window(3, 0, 1.), _reference_window(4, .25),
               {**_window(5, 0, 1.), "depo/reference": 0.0}]
    written = _run_console(windows, every=5)
    # useful groups: 2 x 8 x .5 + 2 x 8 x 1 + 8 x .25 = 26; uniform at 25% needs 104 groups = 832 completions;
    # generated 5 x 8 x 8 = 320 -> 512 saved.
    # (useful over the warm-up and filtering windows: (.5 + .5 + 1 + 1) / 4; with the reference window it would be 65%)
    assert re.search(r"rolled out 8/32 \| useful 75% \|", written[0]), written[0]
    assert written[0].endswith("completions 320, saved ~512 vs uniform's 25% useful (reference steps, 8 groups) | "
                               + written[0].rsplit("| ", 1)[1])
    table = written[-1]
    assert re.search(r"uniform reference: reference steps useful\s+25% of 8 groups \(1 reference step\)", table)
    assert re.search(r"completions saved vs that reference\s+~512 \(uniform's useful share measured on the same "
                     r"policy, at the reference steps\)", table)
    assert "warm-up's" not in written[0]


def test_reference_share_is_weighted_by_reference_rounds_per_window():
    """logging_steps=2: windows mixing a filtering and a reference round carry depo/reference 0.5 and the reference
    round's own share; the reference is their mean weighted by reference rounds, and its size counts those rounds."""
    args = SimpleNamespace(disable_tqdm=True, num_generations=8, gradient_accumulation_steps=1,
                           steps_per_generation=1, num_iterations=1)
    state = SimpleNamespace(global_step=0, max_steps=8, is_world_process_zero=True)
    console = DEPOConsole(every=8, write=lambda line: None)
    console.on_train_begin(args, state, None)
    windows = {2: _window(2, 1, .5, scored=8), 4: _reference_window(4, .4, reference=.5, useful=.7),
               6: {**_window(6, 0, 1.), "depo/reference": 0.0}, 8: _reference_window(8, .6, reference=.5, useful=.8),
               }
    for step, window in windows.items():
        state.global_step = step
        console.on_log(args, state, None, logs=window)
    assert console.reference_source() == "reference steps"
    assert console.uniform_reference() == pytest.approx(0.5)
    assert console.uniform_reference_groups(args) == pytest.approx(16)  # 2 reference rounds x 8 prompts
    # Without any reference window the warm-up reference stands, as before.
    console.windows = [console.windows[0], console.windows[2]]
    assert console.reference_source() == "warm-up" and console.uniform_reference() == 0.5
