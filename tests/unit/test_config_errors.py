"""Bad input fails before any compute, with a message that names the problem and the fix."""

import pytest
from datasets import Dataset

from depo_trl import DEPOTrainer
from depo_trl.tasks import letters_dataset, letters_reward


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"depo_candidate_multiplier": 0}, "depo_candidate_multiplier must be an integer >= 1"),
        ({"depo_band_low": -0.1}, r"depo_band_low must be a pass rate in \[0, 1\]"),
        ({"depo_band_high": 1.5}, r"depo_band_high must be a pass rate in \[0, 1\]"),
        ({"depo_band_low": 0.9, "depo_band_high": 0.2}, "must be below depo_band_high"),
        ({"depo_exploration": 1.0}, r"depo_exploration must be in \[0, 1\)"),
        ({"depo_adaptive_exploration": "yes"}, "depo_adaptive_exploration must be true or false, got 'yes'"),
        ({"depo_exploration_yield_range": [0.5, 0.4]},
         r"depo_exploration_yield_range must be two numbers \[low, high\] with 0 <= low < high, got \[0.5, 0.4\]"),
        ({"depo_exploration_yield_range": 0.5}, r"depo_exploration_yield_range must be two numbers"),
        ({"depo_warmup_steps": -1}, "depo_warmup_steps must be an integer >= 0"),
        ({"depo_reference_every": 1}, r"depo_reference_every must be 0 \(off\) or an integer >= 2, got 1 \(every "
         r"step a reference step would leave no step that filters\)\. Use 0 for no reference steps, or e\.g\. 5"),
        ({"depo_reference_every": -5}, r"depo_reference_every must be 0 \(off\) or an integer >= 2, got -5\. Use 0"),
        ({"depo_reference_every": 2.5}, r"depo_reference_every must be 0 \(off\) or an integer >= 2, got 2\.5\."),
        ({"depo_features": ["length", "colour"]}, r"Unknown depo_features \['colour'\]. Valid feature groups"),
        ({"depo_estimator": "nope"}, r"Unknown depo_estimator 'nope'. Registered estimators"),
        ({"depo_estimator": "no_such_module.Est"}, "could not be imported"),
        ({"depo_embedding_pooling": "max"}, "depo_embedding_pooling must be one of"),
        ({"depo_pass_threshold": float("nan")}, "depo_pass_threshold must be a finite number"),
    ],
)
def test_config_validation(config_factory, overrides, message):
    with pytest.raises(ValueError, match=message):
        config_factory(**overrides)


def test_features_from_a_command_line_string(config_factory):
    assert config_factory(depo_features="length, history").depo_features == ["length", "history"]


def test_dataset_without_prompt_column(tiny_model, tokenizer, config_factory):
    data = Dataset.from_list([{"question": "q"}] * 64)
    with pytest.raises(ValueError, match="no 'prompt' column.*rename_column"):
        DEPOTrainer(model=tiny_model, reward_funcs=letters_reward, args=config_factory(), train_dataset=data,
                    processing_class=tokenizer)


def test_dataset_smaller_than_one_candidate_pool_gives_a_smaller_pool(tiny_model, tokenizer, config_factory):
    with pytest.warns(UserWarning, match="fewer than one candidate pool of 16.*every round scores all 10") as caught:
        trainer = DEPOTrainer(model=tiny_model, reward_funcs=letters_reward, args=config_factory(),
                              train_dataset=letters_dataset(10), processing_class=tokenizer)
    assert trainer.depo_pool_size == 10 and trainer.depo_disabled_reason is None
    assert all(w.filename == __file__ for w in caught if "candidate pool" in str(w.message))  # points at this line


def test_pass_reward_defaults_to_the_first_of_several_with_one_warning(tiny_model, tokenizer, config_factory):
    def format_reward(completions, **kwargs):
        return [0.5] * len(completions)

    kwargs = dict(model=tiny_model, reward_funcs=[letters_reward, format_reward], train_dataset=letters_dataset(64),
                  processing_class=tokenizer)
    with pytest.warns(UserWarning, match=r"DEPO decides a pass with the first, 'letters_reward'.*"
                                         r"depo_pass_threshold=0.5.*set depo_pass_reward") as caught:
        trainer = DEPOTrainer(args=config_factory(), **kwargs)
    assert sum("decides a pass" in str(w.message) for w in caught) == 1
    assert trainer.depo_pass_order == [0, 1] and trainer.depo_pass_index == 0
    with pytest.raises(ValueError, match="depo_pass_reward='accuracy' is not a reward function name"):
        DEPOTrainer(args=config_factory(depo_pass_reward="accuracy"), **kwargs)
    trainer = DEPOTrainer(args=config_factory(depo_pass_reward="format_reward"), **kwargs)
    assert trainer.depo_pass_order == [1]
    trainer = DEPOTrainer(args=config_factory(depo_pass_reward="format_reward, letters_reward"), **kwargs)
    assert trainer.depo_pass_order == [1, 0]


def test_grpo_config_is_refused_with_the_fix(tiny_model, tokenizer, config_factory):
    with pytest.raises(TypeError, match="needs a DEPOConfig"):
        DEPOTrainer(model=tiny_model, reward_funcs=letters_reward, args=config_factory(grpo=True),
                    train_dataset=letters_dataset(64), processing_class=tokenizer)
