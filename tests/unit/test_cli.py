"""The recipe parser and the depo-trl command: unknown keys are errors that name them; flags override YAML."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402
from trl import DatasetMixtureConfig, ModelConfig  # noqa: E402

from depo_trl import DEPOConfig, cli  # noqa: E402
from depo_trl.scripts.depo import DEPOScriptArguments, parse_args, run  # noqa: E402
from depo_trl.scripts.parser import UnknownArgumentsError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "tiny" / "depo" / "config_letters.yaml"


def write_recipe(tmp_path, **overrides):
    recipe = yaml.safe_load(TINY.read_text())
    recipe.update(overrides)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_recipe_parses_into_the_four_config_classes(tmp_path):
    script_args, training_args, model_args, dataset_args = parse_args(["--config", write_recipe(tmp_path)])
    assert isinstance(script_args, DEPOScriptArguments) and isinstance(training_args, DEPOConfig)
    assert isinstance(model_args, ModelConfig) and isinstance(dataset_args, DatasetMixtureConfig)
    recipe = yaml.safe_load(TINY.read_text())
    assert training_args.depo_candidate_multiplier == recipe["depo_candidate_multiplier"]
    assert training_args.max_steps == recipe["max_steps"] and training_args.use_cpu is True
    assert script_args.reward_funcs == ["letters_reward"] and model_args.model_name_or_path == "depo-tiny"


def test_command_line_flags_override_yaml(tmp_path):
    recipe = write_recipe(tmp_path, depo_band_low=0.1, max_steps=30)
    _, training_args, model_args, _ = parse_args(
        ["--config", recipe, "--max_steps", "3", "--depo_band_low", "0.25", "--use_peft", "true", "--lora_r", "4"]
    )
    assert training_args.max_steps == 3 and training_args.depo_band_low == 0.25
    assert model_args.use_peft is True and model_args.lora_r == 4
    assert training_args.depo_band_high == 0.85  # untouched keys keep the YAML value
    # flags before --config win too, and --config=path works
    _, training_args, _, _ = parse_args(["--max_steps", "7", f"--config={recipe}"])
    assert training_args.max_steps == 7


def test_unknown_yaml_key_is_an_error_naming_it(tmp_path):
    recipe = write_recipe(tmp_path, depo_band_lo=0.2, completely_made_up=1)
    with pytest.raises(UnknownArgumentsError) as info:
        parse_args(["--config", recipe])
    message = str(info.value)
    assert "'depo_band_lo'" in message and "Did you mean 'depo_band_low'?" in message
    assert "'completely_made_up'" in message and recipe in message


def test_unknown_flag_is_an_error_naming_it(tmp_path):
    with pytest.raises(UnknownArgumentsError, match="'max_stepz' on the command line. Did you mean 'max_steps'"):
        parse_args(["--config", write_recipe(tmp_path), "--max_stepz", "3"])


def test_recipe_without_config_flag_gets_a_hint(tmp_path):
    with pytest.raises(UnknownArgumentsError, match="--config recipe.yaml"):
        parse_args([write_recipe(tmp_path)])


def test_run_reports_errors_without_traceback(tmp_path, capsys):
    assert run(["--config", write_recipe(tmp_path, depo_bandwidth=1)], prog="depo-trl train") == 2
    assert "depo-trl train: error: Unknown key 'depo_bandwidth'" in capsys.readouterr().err
    assert run(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert run(["--config", write_recipe(tmp_path, depo_band_low=0.9, depo_band_high=0.5)]) == 2
    assert "depo_band_low (0.9) must be below depo_band_high" in capsys.readouterr().err


def test_cli_dispatch(tmp_path, capsys):
    assert cli.main([]) == 2 and "usage: depo-trl" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    assert cli.main(["fly"]) == 2 and "unknown command 'fly'" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path)]) == 2 and "No trainer_state.json" in capsys.readouterr().err
    assert cli.main(["train", "--config", write_recipe(tmp_path, bogus_key=1)]) == 2
    assert "Unknown key 'bogus_key'" in capsys.readouterr().err


def test_module_entry_point_runs_as_a_script(tmp_path):
    """`python -m depo_trl.cli train ...` (what the console script runs) reaches the parser in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-m", "depo_trl.cli", "train", "--config", write_recipe(tmp_path), "--depo_bogus", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Unknown key 'depo_bogus' on the command line" in result.stderr
