"""Built-in rewards and prompt formatting, on the real GSM8K rows in ../shared/data/gsm8k/ (skipped if absent)."""

import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from depo_trl import rewards
from depo_trl.rewards import (
    REWARD_FUNCS,
    extract_final_number,
    format_gsm8k,
    format_reward,
    get_reward_func,
    gsm8k_accuracy,
    math_accuracy,
    normalize_latex,
    normalize_number,
)

GSM8K_DIR = Path(SHARED_DATA) / "gsm8k"


@pytest.fixture(scope="module")
def gsm8k_rows():
    if not (GSM8K_DIR / "test.jsonl").exists():
        pytest.skip(f"GSM8K data not found at {GSM8K_DIR}: put train.jsonl and test.jsonl from "
                    "github.com/openai/grade-school-math (grade_school_math/data/, MIT) in ../shared/data/gsm8k/ "
                    "next to the repository, or set $DEPO_BENCH_DATA (docs/data.md)")
    rows = []
    for name in ("train.jsonl", "test.jsonl"):
        with open(GSM8K_DIR / name) as f:
            rows += [json.loads(line) for line in f]
    return rows


def _gold(row):
    return row["answer"].rsplit("####", 1)[1].strip()


def test_gold_solution_scores_one_on_every_row(gsm8k_rows):
    # The reference solution itself ends with "#### <answer>" (and is full of <<a*b=c>> numbers before it).
    completions = [row["answer"] for row in gsm8k_rows]
    answers = [row["answer"] for row in gsm8k_rows]
    assert len(gsm8k_rows) == 7473 + 1319
    assert gsm8k_accuracy(completions, answer=answers) == [1.0] * len(gsm8k_rows)


def test_boxed_gold_scores_one_and_off_by_one_scores_zero(gsm8k_rows):
    rows = gsm8k_rows[::7]
    golds = [normalize_number(_gold(r)) for r in rows]
    right = [f"Let me compute.\nSo the result is \\boxed{{{g}}}." for g in golds]
    wrong = [f"So the result is \\boxed{{{int(g) + 1}}}." for g in golds]
    answers = [r["answer"] for r in rows]
    assert gsm8k_accuracy(right, answer=answers) == [1.0] * len(rows)
    assert gsm8k_accuracy(wrong, answer=answers) == [0.0] * len(rows)


def test_formatted_rows_score_with_normalised_gold(gsm8k_rows):
    rows = [r for r in gsm8k_rows if "," in _gold(r)][:20]  # golds written "1,080"
    assert rows, "expected GSM8K golds with thousands separators"
    formatted = [format_gsm8k(r) for r in rows]
    for row, out in zip(rows, formatted):
        assert "," not in out["answer"] and out["answer"] == _gold(row).replace(",", "")
        assert [m["role"] for m in out["prompt"]] == ["system", "user"]
        assert out["prompt"][1]["content"] == row["question"].strip()
        assert "\\boxed{}" in out["prompt"][0]["content"] and "####" in out["prompt"][0]["content"]
    completions = [[{"role": "assistant", "content": f"Total: ${_gold(r)}"}] for r in rows]  # conversational
    assert gsm8k_accuracy(completions, answer=[o["answer"] for o in formatted]) == [1.0] * len(rows)


@pytest.mark.parametrize(
    "completion",
    [
        "#### 1080",
        "#### 1,080",
        "The answer is $1,080.",
        "The answer is 1080.00",
        "so **1080** dollars in total",
        "\\boxed{1080}",
        "\\boxed{\\$1,080}",
        "\\boxed{1080 \\text{ dollars}}",
        "First 2 + 3 = 5, then 5 * 216 = 1080",
        "I think \\boxed{1080}. Double-check: 2 + 2 = 4",  # the box wins over later numbers
    ],
)
def test_gsm8k_formatting_variants_pass(completion):
    assert gsm8k_accuracy([completion], answer=["... #### 1,080"]) == [1.0]


@pytest.mark.parametrize(
    "completion",
    ["#### 1081", "\\boxed{108}", "The answer is 10,800.", "1080 is wrong, it is 1079", "\\boxed{1079} not 1080", ""],
)
def test_gsm8k_wrong_answers_fail(completion):
    assert gsm8k_accuracy([completion], answer=["1080"]) == [0.0]


def test_negative_and_decimal_answers():
    assert gsm8k_accuracy(["The change is -5."], answer=["#### -5"]) == [1.0]
    assert gsm8k_accuracy(["It drops by 5 - 3 = 2"], answer=["#### -3"]) == [0.0]
    assert gsm8k_accuracy(["\\boxed{2.50}"], answer=["2.5"]) == [1.0]
    assert normalize_number("$1,234.500") == "1234.5" and normalize_number("12.") == "12"
    assert extract_final_number("no digits here") is None


def test_unreadable_gold_raises_with_advice():
    with pytest.raises(ValueError, match="dataset_format: gsm8k"):
        gsm8k_accuracy(["#### 3"], answer=["three"])


@pytest.mark.parametrize(
    "completion, gold",
    [
        ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\frac12}", "\\frac{1}{2}"),
        ("\\boxed{0.5}", "\\frac{1}{2}"),
        ("so \\boxed{x = 3}", "3"),
        ("\\boxed{3\\sqrt{2}}", "The solution... so the answer is $\\boxed{3\\sqrt{2}}$."),
        ("\\boxed{90^\\circ}", "90"),
        ("\\boxed{\\left( 1, 2 \\right)}", "(1,2)"),
        ("#### 12", "12"),
    ],
)
def test_math_accuracy_equal_answers(completion, gold):
    assert math_accuracy([completion], answer=[gold]) == [1.0]


@pytest.mark.parametrize(
    "completion, gold",
    [("\\boxed{\\frac{1}{3}}", "\\frac{1}{2}"), ("the answer is 3", "3"), ("\\boxed{(2,1)}", "(1,2)"), ("\\boxed{}", "1")],
)
def test_math_accuracy_unequal_or_unboxed(completion, gold):
    assert math_accuracy([completion], solution=[gold]) == [0.0]


def test_math_fallback_without_math_verify(monkeypatch):
    monkeypatch.setattr(rewards, "_math_verify", lambda: None)
    assert math_accuracy(["\\boxed{\\tfrac{3}{4}}", "\\boxed{0.75}", "\\boxed{4/3}"], answer=["\\frac34"] * 3) == [
        1.0,
        1.0,
        0.0,
    ]
    assert normalize_latex("\\left(1, 2\\right).") == "(1,2)"


def test_math_verify_backend_when_installed():
    pytest.importorskip("math_verify", reason="math-verify not installed; the fallback is tested above")
    # Equal only symbolically: the string/number fallback cannot see it, math-verify can.
    assert math_accuracy(["\\boxed{\\frac{2}{\\sqrt{2}}}"], answer=["\\sqrt{2}"]) == [1.0]


def test_math_accuracy_needs_a_gold_column():
    with pytest.raises(ValueError, match="'answer' or 'solution'"):
        math_accuracy(["\\boxed{1}"])


def test_format_reward():
    completions = ["\\boxed{4}", "#### 5", "so 5", "\\boxed{}", "####", "\\boxed{unclosed"]
    assert format_reward(completions) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_registry_names_match_function_names():
    # TRL logs rewards/<__name__>/... and depo_pass_reward refers to that name.
    for name, func in REWARD_FUNCS.items():
        assert callable(func) and func.__name__ == name
        assert get_reward_func(name) is func


def test_unknown_reward_name_lists_the_registry():
    with pytest.raises(ValueError, match="gsm8k_accuracy"):
        get_reward_func("gsm8k_acc")


def test_dotted_path_reward(tmp_path, monkeypatch):
    (tmp_path / "my_rewards_mod.py").write_text("def length_reward(completions, **kw):\n    return [1.0] * len(completions)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert get_reward_func("my_rewards_mod.length_reward")(["a", "b"]) == [1.0, 1.0]
    with pytest.raises(ValueError, match="no attribute 'missing'"):
        get_reward_func("my_rewards_mod.missing")
    with pytest.raises(ValueError, match="Could not import"):
        get_reward_func("no_such_module_xyz.fn")
