"""What the training script loads from a recipe: local files and built-in datasets, the tiny model, rewards."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from depo_trl import graded_tasks  # noqa: E402
from depo_trl.rewards import gsm8k_accuracy  # noqa: E402
from depo_trl.scripts.depo import DEPOScriptArguments  # noqa: E402
from depo_trl.scripts.loading import load_datasets, load_model, load_reward_funcs  # noqa: E402

# The first 50 rows of GSM8K's test split, shipped with the tests (MIT; see tests/data/README.md).
GSM8K_TEST = Path(__file__).resolve().parents[1] / "data" / "gsm8k_test_50.jsonl"
ROWS = [
    {"question": "Tom has 3 apples and buys 1,000 more. How many?", "answer": "3 + 1000 = 1003\n#### 1,003"},
    {"question": "What is 6 times 7?", "answer": "6 * 7 = <<6*7=42>>42\n#### 42"},
]


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_local_jsonl_by_path_and_by_builder_give_the_same_rows(jsonl):
    by_path = load_datasets(DEPOScriptArguments(dataset_name=str(jsonl), dataset_format="gsm8k"))
    by_builder = load_datasets(
        DEPOScriptArguments(dataset_name="json", dataset_data_files=[str(jsonl)], dataset_format="gsm8k")
    )
    for loaded in (by_path, by_builder):
        train = loaded["train"]
        assert sorted(train.column_names) == ["answer", "prompt"] and train["answer"] == ["1003", "42"]
        assert train[0]["prompt"][-1] == {"role": "user", "content": ROWS[0]["question"]}


def test_parquet_file_and_prompt_column(tmp_path):
    from datasets import Dataset

    path = tmp_path / "data.parquet"
    Dataset.from_list([{"text": "2+2?", "answer": "4"}, {"text": "3+3?", "answer": "6"}]).to_parquet(str(path))
    train = load_datasets(DEPOScriptArguments(dataset_name=str(path), dataset_prompt_column="text"))["train"]
    assert train["prompt"] == ["2+2?", "3+3?"] and "text" not in train.column_names


def test_shared_gsm8k_file_loads_formats_and_scores():
    train = load_datasets(DEPOScriptArguments(dataset_name=str(GSM8K_TEST), dataset_format="gsm8k", dataset_max_samples=50))["train"]
    assert len(train) == 50
    assert gsm8k_accuracy([f"\\boxed{{{a}}}" for a in train["answer"]], answer=train["answer"]) == [1.0] * 50


def test_builtin_datasets_and_max_samples():
    letters = load_datasets(DEPOScriptArguments(dataset_name="depo:letters", dataset_max_samples=64), seed=1)
    assert len(letters["train"]) == 64 and {"prompt", "allowed"} <= set(letters["train"].column_names)
    assert "test" in letters
    controlled = load_datasets(DEPOScriptArguments(dataset_name="depo:controlled", dataset_max_samples=30))
    assert len(controlled["train"]) == 30
    with pytest.raises(ValueError, match="depo:letters, depo:controlled, depo:graded"):
        load_datasets(DEPOScriptArguments(dataset_name="depo:nope"))


def test_dataset_errors_are_actionable(tmp_path, jsonl):
    with pytest.raises(ValueError, match="set dataset_name"):
        load_datasets(DEPOScriptArguments())
    with pytest.raises(FileNotFoundError, match="not found"):
        load_datasets(DEPOScriptArguments(dataset_name=str(tmp_path / "missing.jsonl")))
    with pytest.raises(ValueError, match="no split 'training'"):
        load_datasets(DEPOScriptArguments(dataset_name=str(jsonl), dataset_train_split="training"))


def test_rewards_from_script_args():
    funcs = load_reward_funcs(DEPOScriptArguments(reward_funcs=["gsm8k_accuracy", "format_reward"]))
    assert [f.__name__ for f in funcs] == ["gsm8k_accuracy", "format_reward"]
    with pytest.raises(ValueError, match="No reward"):
        load_reward_funcs(DEPOScriptArguments())


def test_tiny_model_is_built_and_hub_models_are_left_to_trl():
    from trl import ModelConfig

    from depo_trl import DEPOConfig

    args = DEPOConfig(output_dir="/tmp/unused", use_cpu=True, bf16=False, report_to="none")
    model, tokenizer = load_model(ModelConfig(model_name_or_path="depo-tiny"), args)
    assert model.config.model_type == "qwen2" and tokenizer.chat_template
    name, processing_class = load_model(ModelConfig(model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct", dtype="bfloat16"), args)
    assert name == "Qwen/Qwen2.5-0.5B-Instruct" and processing_class is None
    assert args.model_init_kwargs["dtype"] == "bfloat16"


def test_builtin_graded_tasks_with_family_and_level_options():
    import json

    loaded = load_datasets(
        DEPOScriptArguments(dataset_name="depo:graded", dataset_config="families=add,compare levels=1,2",
                            dataset_max_samples=80),
        seed=3,
    )
    train, test = loaded["train"], loaded["test"]
    assert len(train) == 80 and len(test) == 32
    assert set(train["family"]) == {"add", "compare"} and set(train["level"]) == {1, 2}
    assert {"prompt", "answer", "answer_kind"} <= set(train.column_names)
    key = lambda p: json.dumps(p, sort_keys=True)  # noqa: E731
    assert not {key(p) for p in test["prompt"]} & {key(p) for p in train["prompt"]}  # held out means unseen
    small_test = load_datasets(DEPOScriptArguments(dataset_name="depo:graded", dataset_config="levels=2 test=20",
                                                     dataset_max_samples=64))
    assert len(small_test["test"]) == 20 and set(small_test["test"]["level"]) == {2}
    everything = load_datasets(DEPOScriptArguments(dataset_name="depo:graded", dataset_max_samples=40))["train"]
    assert set(everything["family"]) == set(graded_tasks.FAMILIES)  # a small n still covers every family


def test_builtin_dataset_options_are_checked():
    with pytest.raises(ValueError, match=r"Expected space-separated key=v1,v2 with keys \['families', 'levels', 'test'\]"):
        load_datasets(DEPOScriptArguments(dataset_name="depo:graded", dataset_config="family=add"))
    with pytest.raises(ValueError, match="levels must be int"):
        load_datasets(DEPOScriptArguments(dataset_name="depo:graded", dataset_config="levels=easy"))
    with pytest.raises(ValueError, match="Unknown graded-task families"):
        load_datasets(DEPOScriptArguments(dataset_name="depo:graded", dataset_config="families=poetry"))
    with pytest.raises(ValueError, match="takes no dataset_config"):
        load_datasets(DEPOScriptArguments(dataset_name="depo:letters", dataset_config="families=add"))


def test_saved_tiny_checkpoint_reloads_its_own_tokenizer(tmp_path):
    """A depo-tiny checkpoint (character tokenizer beside a qwen2 config) reloads with the tokenizer it was saved
    with: transformers' AutoTokenizer alone swaps in Qwen2Tokenizer there, which drops spaces and newlines."""
    from trl import ModelConfig

    from depo_trl import DEPOConfig
    from depo_trl.tiny import build_model, build_tokenizer, load_saved_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    build_model(tokenizer).save_pretrained(tmp_path)
    text = "ab c\nd 12+3"
    messages = [{"role": "user", "content": "reverse: ab c"}]
    expected_ids = tokenizer(text)["input_ids"]
    expected_chat = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    reloaded = load_saved_tokenizer(str(tmp_path))
    assert reloaded(text)["input_ids"] == expected_ids
    assert reloaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected_chat

    args = DEPOConfig(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    model, processing_class = load_model(ModelConfig(model_name_or_path=str(tmp_path)), args)
    assert model == str(tmp_path)  # the model itself is still TRL's to load
    assert processing_class(text)["input_ids"] == expected_ids
    assert processing_class.truncation_side == "left"
