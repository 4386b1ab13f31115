"""One wiring: a DEPO run's config becomes a ``PromptSelector`` in one place, and each rule is checked in one place.

``PromptSelector.from_config`` is what the trainer and ``route`` call (defaults are the engine's, and
``DEPOConfig``'s agree with them); ``selection.check_band`` / ``check_exploration`` are the checks behind the
config's, the engine's and ``select``'s errors; ``register_estimator`` refuses a second class under a taken name.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from depo_trl import DEPOConfig, DEPOTrainer
from depo_trl.engine import CONFIG_FIELDS, PromptSelector
from depo_trl.estimators import ESTIMATORS, LogisticPassRateEstimator, PassRateEstimator, register_estimator
from depo_trl.prompt_encoder import ENCODER_DEFAULTS
from depo_trl.route import selector_from_run_config
from depo_trl.selection import check_band, check_exploration, select
from depo_trl.tasks import letters_dataset, letters_reward

SELECTOR_DEFAULTS = {k: p.default for k, p in inspect.signature(PromptSelector.__init__).parameters.items()}


def _settings(selector: PromptSelector) -> dict:
    return {
        "group_size": selector.group_size,
        "estimator": type(selector.estimator).__name__,
        "features": selector.featurizer.names if hasattr(selector.featurizer, "names") else None,
        "band": selector.band,
        "exploration": selector.exploration,
        "exploration_yield_range": (selector.exploration_yield.ratio_low, selector.exploration_yield.ratio_high),
        "selection": selector.selection,
        "revisit_after": selector.revisit_after,
        "history_max_prompts": selector.history.max_prompts,
        "rng": selector.rng.bit_generator.state["state"]["state"],
    }


def test_config_defaults_are_the_engines():
    """The defaults live in ``PromptSelector``; ``DEPOConfig`` must not drift from them."""
    fields = {f.name: f for f in DEPOConfig.__dataclass_fields__.values()}

    def default(name):
        f = fields[name]
        return f.default_factory() if callable(f.default_factory) else f.default

    for arg, name in CONFIG_FIELDS.items():
        if arg in ("features", "estimator_kwargs", "feature_options"):
            continue  # the trainer's feature default adds model-reading groups; empty kwargs/options are None
        expected = SELECTOR_DEFAULTS[arg]  # a pair the engine takes as a tuple is a list in the config (YAML)
        assert default(name) == (list(expected) if isinstance(expected, tuple) else expected), name
    assert (default("depo_band_low"), default("depo_band_high")) == SELECTOR_DEFAULTS["band"]
    for name, value in ENCODER_DEFAULTS.items():  # the prefill settings route falls back to
        assert default(name) == value, name


def test_from_config_reads_a_config_and_a_run_record_alike(tmp_path):
    args = DEPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", seed=7, depo_band_low=0.2,
                      depo_band_high=0.7, depo_exploration=0.05, depo_selection="thompson", depo_revisit_after=None,
                      depo_features=["length", "history"], depo_history_max_prompts=1000, num_generations=4,
                      per_device_train_batch_size=8, depo_exploration_yield_range=[0.3, 0.6])
    from_args = PromptSelector.from_config(args, group_size=4, seed=args.seed)
    record = {"num_generations": 4, "seed": 7, "depo": {name: getattr(args, name) for name in (
        *CONFIG_FIELDS.values(), "depo_band_low", "depo_band_high")}}
    assert _settings(selector_from_run_config(record)) == _settings(from_args)
    assert from_args.band == (0.2, 0.7) and from_args.selection == "thompson" and from_args.revisit_after is None
    assert (from_args.exploration_yield.ratio_low, from_args.exploration_yield.ratio_high) == (0.3, 0.6)


def test_from_config_fills_missing_fields_with_the_engine_defaults():
    selector = PromptSelector.from_config({"depo_features": ["length"]}, group_size=2, seed=0)
    assert selector.band == SELECTOR_DEFAULTS["band"]
    assert selector.exploration == SELECTOR_DEFAULTS["exploration"]
    assert selector.revisit_after == SELECTOR_DEFAULTS["revisit_after"]
    assert type(selector.estimator).name == SELECTOR_DEFAULTS["estimator"]


def test_from_config_estimator_instance_wins_over_the_name_and_its_kwargs():
    mine = LogisticPassRateEstimator()
    selector = PromptSelector.from_config({"depo_estimator": "beta", "depo_estimator_kwargs": {"nope": 1}},
                                          group_size=2, seed=0, estimator=mine)
    assert selector.estimator is mine


def test_trainer_builds_its_selector_from_its_config(tiny_model, tokenizer, config_factory):
    args = config_factory(depo_band_low=0.3, depo_band_high=0.6, depo_exploration=0.2, depo_features=["length"])
    trainer = DEPOTrainer(model=tiny_model, reward_funcs=letters_reward, args=args,
                          train_dataset=letters_dataset(64, seed=0), processing_class=tokenizer)
    expected = PromptSelector.from_config(args, group_size=args.num_generations, seed=args.seed)
    assert _settings(trainer.depo_selector) == _settings(expected)


@pytest.mark.parametrize("band, message", [
    ((0.9, 0.1), "must be below"),
    ((-0.1, 0.5), r"must be a pass rate in \[0, 1\]"),
    ((0.1, 1.5), r"must be a pass rate in \[0, 1\]"),
])
def test_one_band_check_everywhere(tmp_path, band, message):
    with pytest.raises(ValueError, match=message):
        check_band(*band)
    with pytest.raises(ValueError, match=message):
        PromptSelector(group_size=2, band=band)
    with pytest.raises(ValueError, match="depo_band_.*" + message):
        DEPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", depo_band_low=band[0],
                   depo_band_high=band[1])


@pytest.mark.parametrize("exploration", [-0.1, 1.0, 1.5])
def test_one_exploration_check_everywhere(tmp_path, exploration):
    with pytest.raises(ValueError, match=r"exploration must be in \[0, 1\)"):
        check_exploration(exploration)
    with pytest.raises(ValueError, match=r"exploration must be in \[0, 1\)"):
        PromptSelector(group_size=2, exploration=exploration)
    if exploration != 1.0:  # select() alone accepts 1: every pick explores
        with pytest.raises(ValueError, match=r"exploration must be in \[0, 1\]"):
            select("band", np.full(8, 0.5), 2, 4, np.random.default_rng(0), exploration=exploration)
    with pytest.raises(ValueError, match=r"depo_exploration must be in \[0, 1\)"):
        DEPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", depo_exploration=exploration)


class _Constant(PassRateEstimator):
    name = "constant-test"

    def partial_fit(self, features, passes, trials, keys=None):
        pass

    def predict_pass_rate(self, features, keys=None):
        return np.full(len(features), 0.5)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_register_estimator_refuses_a_taken_name():
    try:
        assert register_estimator(_Constant) is _Constant
        assert register_estimator(_Constant) is _Constant  # the same class again is harmless
        clash = type("Clash", (_Constant,), {})
        with pytest.raises(ValueError, match="already registered as 'constant-test'.*overwrite=True"):
            register_estimator(clash)
        with pytest.raises(ValueError, match="already registered as 'logistic'"):
            register_estimator(type("Mine", (LogisticPassRateEstimator,), {}))
        assert register_estimator(overwrite=True)(clash) is clash
        assert ESTIMATORS["constant-test"] is clash
    finally:
        ESTIMATORS.pop("constant-test", None)
    assert ESTIMATORS["logistic"] is LogisticPassRateEstimator
