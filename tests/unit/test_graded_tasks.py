"""Graded task families: datasets are deterministic, balanced and correct; the reward parses short answers."""

from __future__ import annotations

import re

import pytest

from depo_trl import graded_tasks as gt
from depo_trl.graded_tasks import extract_answer, graded_dataset, graded_reward, graded_rows


def _solve(question: str, family: str, level: int) -> str:
    """An independent solver of every family, from the question text alone."""
    quoted = re.findall(r"'([^']*)'", question)
    numbers = [int(x) for x in re.findall(r"\d+", question)]
    if family in ("add", "sub", "mul"):
        a, op, b = re.search(r"(\d+) ([-+*]) (\d+)", question).groups()
        return str({"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op])
    if family == "compare":
        return str(max(numbers))
    if family == "parity":
        return "odd" if numbers[0] % 2 else "even"
    if family == "count_letter":
        return str(quoted[1].count(quoted[0]))
    if family == "next_number":
        a, b, c, d = numbers[:4]
        return str(d + (d - c)) if b - a == c - b else str(d * d // c)
    if family == "reverse_word":
        return quoted[0][::-1]
    if family == "unit_convert":
        factors = {("centimeters", "meters"): 100, ("meters", "kilometers"): 1000, ("grams", "kilograms"): 1000,
                   ("millimeters", "centimeters"): 10, ("milliliters", "liters"): 1000, ("minutes", "hours"): 60,
                   ("seconds", "minutes"): 60, ("hours", "days"): 24, ("days", "weeks"): 7, ("inches", "feet"): 12,
                   ("months", "years"): 12}
        small, amount, big = re.search(r"How many (\w+) are in (\d+) (\w+)\?", question).groups()
        return str(int(amount) * factors[(small, big)])
    if family == "copy_word":
        return quoted[0]
    if family == "capital":
        return gt.CAPITALS[level][re.search(r"capital city of (\w+)\?", question).group(1)]
    if family == "plural":
        noun = quoted[0]
        return {1: noun + "s", 2: noun + "es", 3: noun[:-1] + "ies"}.get(level) or gt._IRREGULAR[noun]
    if family == "opposite":
        return gt.OPPOSITES[level][quoted[0]]
    if family == "letter_at":
        index = {"first": 0, "last": -1, "second": 1, "third-to-last": -3}[question.split()[3]]
        return quoted[0][index]
    raise AssertionError(family)


def test_every_family_and_level_gives_correct_answers():
    rows = graded_rows(len(gt.FAMILIES) * len(gt.LEVELS) * 6, seed=3)
    seen = set()
    for row in rows:
        question = row["prompt"][0]["content"]
        assert row["prompt"][0]["role"] == "user" and "Reply with only" in question
        assert row["answer"] == _solve(question, row["family"], row["level"]), question
        assert row["answer_kind"] in gt.ANSWER_KINDS
        seen.add((row["family"], row["level"]))
    assert seen == {(f, lvl) for f in gt.FAMILIES for lvl in gt.LEVELS}


def test_dataset_is_deterministic_balanced_distinct_and_filterable():
    a = graded_dataset(90, families=["add", "parity", "reverse_word"], levels=[1, 3], seed=7)
    b = graded_dataset(90, families=["add", "parity", "reverse_word"], levels=[1, 3], seed=7)
    assert a.to_list() == b.to_list()
    assert a.to_list() != graded_dataset(90, families=["add", "parity", "reverse_word"], levels=[1, 3], seed=8).to_list()
    assert set(a.column_names) >= {"prompt", "answer", "answer_kind", "family", "level"}
    cells = {}
    for row in a:
        cells[(row["family"], row["level"])] = cells.get((row["family"], row["level"]), 0) + 1
    assert set(cells.values()) == {15} and len(cells) == 6
    questions = [row["prompt"][0]["content"] for row in a]
    assert len(set(questions)) == len(questions)


def test_harder_levels_have_bigger_numbers():
    rows = graded_rows(200, families=["add"], seed=0)
    by_level = {lvl: max(len(r["answer"]) for r in rows if r["level"] == lvl) for lvl in gt.LEVELS}
    assert by_level[1] < by_level[3] < by_level[4]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="families.*'division'"):
        graded_rows(10, families=["division"])
    with pytest.raises(ValueError, match="levels"):
        graded_rows(10, levels=[9])
    with pytest.raises(ValueError, match="n >= 1"):
        graded_rows(0)
    with pytest.raises(ValueError, match="ran out of distinct"):
        graded_rows(500, families=["parity"], levels=[1])  # only 99 numbers below 100


@pytest.mark.parametrize(
    "text,kind,expected",
    [
        ("68", "number", 68.0),
        (" 68.", "number", 68.0),
        ("23 + 45 = 68", "number", 68.0),
        ("The answer is 68.", "number", 68.0),
        ("Answer: 1,234", "number", 1234.0),
        ("The sum of 23 and 45 is 68.", "number", 68.0),
        ("52 is larger", "number", 52.0),
        ("7.0\nbecause 3 + 4 = 7", "number", 7.0),
        ("\n\n  12\n", "number", 12.0),
        ("I don't know", "number", None),
        ("tac", "word", "tac"),
        ("'Tac'", "word", "tac"),
        ("The word 'cat' backwards is 'tac'.", "word", "tac"),
        ("Backwards: tac", "word", "tac"),
        ("The first letter is A.", "word", "a"),
        ("Odd", "choice", "odd"),
        ("37 is odd, not even.", "choice", "odd"),
        ("It is an even number", "choice", "even"),
        ("oddly enough, seven", "choice", None),
    ],
)
def test_extract_answer(text, kind, expected):
    got = extract_answer(text, kind)
    if kind == "number" and expected is not None:
        assert got is not None and float(got) == expected
    else:
        assert got == expected


def test_reward_is_binary_and_compares_by_kind():
    completions = ["68", "The answer is 69", "1,234.0", "TAC!", "tack", "odd", "even", "5"]
    answers = ["68", "68", "1234", "tac", "tac", "odd", "odd", "5"]
    kinds = ["number", "number", "number", "word", "word", "choice", "choice", "number"]
    assert graded_reward(completions, answers, kinds) == [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    # Conversational completions and a missing answer_kind column (inferred from the gold answer).
    chat = [[{"role": "assistant", "content": "= 14"}], [{"role": "assistant", "content": "yot"}]]
    assert graded_reward(chat, ["14", "yot"]) == [1.0, 1.0]
    # Only the first line counts: a right answer after a wrong one does not pass.
    assert graded_reward(["13\n14"], ["14"], ["number"]) == [0.0]
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        graded_reward(["1", "2"], ["1"])


def test_reward_of_gold_answers_is_one_on_a_whole_dataset():
    rows = graded_rows(120, seed=11)
    answers = [r["answer"] for r in rows]
    kinds = [r["answer_kind"] for r in rows]
    assert graded_reward([a.replace("|", " or ") for a in answers], answers, kinds) == [1.0] * len(rows)
    assert graded_reward([f"The answer is {a}." for a in answers], answers, kinds) == [1.0] * len(rows)
    firsts = [a.split("|")[0] for a in answers]
    assert graded_reward(firsts, answers, kinds) == [1.0] * len(rows)


def test_word_answers_accept_alternatives_and_a_leading_answer():
    assert graded_reward(["Paris is the capital of France.", "The capital is Paris", "Lyon"], ["Paris"] * 3,
                         ["word"] * 3) == [1.0, 1.0, 0.0]
    assert graded_reward(["little", "Small.", "large"], ["small|little"] * 3, ["word"] * 3) == [1.0, 1.0, 0.0]
    rows = graded_rows(56, seed=0)  # one per cell: a small n still covers every family
    assert {r["family"] for r in rows} == set(gt.FAMILIES)
