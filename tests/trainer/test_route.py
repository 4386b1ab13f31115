"""Routing with a saved tiny DEPO run: predicted pass rates follow the task's real difficulty, tau splits the
prompts, the run's config and model are found in the run folder (or the error says what to pass)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from depo_trl import cli  # noqa: E402
from depo_trl.route import LARGE, SMALL, find_state_dir, route  # noqa: E402
from depo_trl.scripts.depo import main, parse_args  # noqa: E402
from depo_trl.tasks import LETTERS_ALPHABET, letters_dataset  # noqa: E402

TINY = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "depo" / "config_letters.yaml"


def _train(out, *flags):
    parsed = parse_args(["--config", str(TINY), "--max_steps", "24", "--depo_warmup_steps", "4", "--output_dir", str(out),
                         "--dataset_max_samples", "256", "--save_strategy", "steps", "--save_steps", "12",
                         "--disable_tqdm", "true", *flags])
    main(*parsed)
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("route") / "run")


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    rows = letters_dataset(n_prompts=120, seed=123).to_list()  # prompts the run never saw
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def _spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_predictions_follow_difficulty_and_tau_splits(tiny_run, prompts):
    path, rows = prompts
    routing = route(str(tiny_run), str(path), tau=0.3)
    true_rate = np.array([r["set_size"] / len(LETTERS_ALPHABET) for r in rows])
    assert routing.state_dir == str(tiny_run) and len(routing.predicted) == len(rows)
    assert _spearman(routing.predicted, true_rate) > 0.6  # the estimator learned which prompts are easy
    routes = np.array(routing.routes)
    assert set(routes) == {SMALL, LARGE}
    assert (routing.predicted[routes == SMALL] >= 0.3).all() and (routing.predicted[routes == LARGE] < 0.3).all()
    # prompts sent to the larger model really are the harder ones
    assert true_rate[routes == LARGE].mean() < true_rate[routes == SMALL].mean()
    assert "Model-read features (embeddings): computed with the run's saved model." in routing.summary()


def test_checkpoint_routes_and_missing_config_names_the_fix(tiny_run, prompts, tmp_path):
    path, _ = prompts
    checkpoint = tiny_run / "checkpoint-12"
    assert (checkpoint / "depo_run.json").is_file()
    early = route(str(checkpoint), str(path), tau=0.3)
    late = route(str(tiny_run), str(path), tau=0.3)
    assert not np.allclose(early.predicted, late.predicted)  # a different state
    bare = tmp_path / "bare"
    shutil.copytree(checkpoint, bare)
    (bare / "depo_run.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"--config recipe.yaml"):
        route(str(bare), str(path))
    # the recipe, with the flags the run overrode that matter to features (none here), rebuilds the same features
    again = route(str(bare), str(path), tau=0.3, config=str(TINY))
    np.testing.assert_allclose(again.predicted, early.predicted)
    with pytest.raises(FileNotFoundError, match="No DEPO state"):
        route(str(tmp_path), str(path))
    with pytest.raises(ValueError, match=r"tau=1.5"):
        route(str(tiny_run), str(path), tau=1.5)


def test_embedding_run_without_its_model_is_refused_clearly(tiny_run, prompts, tmp_path):
    path, _ = prompts
    stripped = tmp_path / "no-model"
    stripped.mkdir()
    for name in ("depo_state.json", "depo_state.npz", "depo_run.json", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja"):
        if (tiny_run / name).exists():
            shutil.copy(tiny_run / name, stripped / name)
    with pytest.raises(FileNotFoundError, match=r"depo_features that read no model"):
        route(str(stripped), str(path))


def test_run_without_embedding_routes_without_any_model(tmp_path, prompts):
    path, rows = prompts
    run = _train(tmp_path / "text-run", "--depo_features", "length", "history", "--save_strategy", "no",
                 "--max_steps", "6")
    for name in ("model.safetensors", "config.json"):
        (run / name).unlink()  # no model needed
    routing = route(str(run), [r["prompt"] for r in rows], tau=0.5)
    assert len(routing.predicted) == len(rows) and np.isfinite(routing.predicted).all()


def test_run_whose_only_model_read_feature_is_answer_likelihood_loads_its_model(tmp_path, prompts):
    """Routing loads the run's model for whatever its feature groups declare, not only for 'embedding'."""
    path, rows = prompts
    run = _train(tmp_path / "answer-run", "--depo_features", "length", "answer_likelihood", "--save_strategy", "no",
                 "--max_steps", "6", "--depo_feature_options", '{"answer_likelihood": {"column": "allowed"}}')
    routing = route(str(run), str(path), tau=0.5)
    assert len(routing.predicted) == len(rows) and np.isfinite(routing.predicted).all()
    assert "Model-read features (answer_logprobs): computed with the run's saved model." in routing.summary()


def test_cli_writes_routed_jsonl(tiny_run, prompts, tmp_path, capsys):
    path, rows = prompts
    out = tmp_path / "routed.jsonl"
    assert cli.main(["route", str(tiny_run), "--prompts", str(path), "--tau", "0.3", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(rows) and records[0]["prompt"] == rows[0]["prompt"]
    assert all((r["route"] == SMALL) == (r["predicted_pass_rate"] >= 0.3) for r in records)
    printed = capsys.readouterr().out
    assert "stay with the small model" in printed and "kept small:" in printed
    assert cli.main(["route", str(tiny_run), "--prompts", str(tmp_path / "nope.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err


def test_find_state_dir_prefers_the_run_folder(tiny_run):
    assert find_state_dir(str(tiny_run)) == str(tiny_run)


def test_route_scores_like_the_trainer_itself(tmp_path, prompts):
    """Same tokenizer, saved model and state: route's predictions are the trainer's own scores of those prompts."""
    _, rows = prompts
    out = tmp_path / "same"
    trainer = main(*parse_args(["--config", str(TINY), "--max_steps", "8", "--depo_warmup_steps", "3",
                                "--output_dir", str(out), "--dataset_max_samples", "128", "--disable_tqdm", "true"]))
    trainer.model.eval()
    own, _ = trainer._score([r["prompt"] for r in rows])
    routed = route(str(out), rows, tau=0.5, tokenizer=trainer.processing_class)
    np.testing.assert_allclose(routed.predicted, own.predicted, atol=1e-9)
    # The tokenizer the run saved reloads as it was trained with (depo_trl.tiny.load_saved_tokenizer), so route
    # without tokenizer= scores the same too.
    np.testing.assert_allclose(route(str(out), rows, tau=0.5).predicted, own.predicted, atol=1e-9)
