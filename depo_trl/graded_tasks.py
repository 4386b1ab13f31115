"""Graded, verifiable task families for small real language models (e.g. SmolLM2-135M-Instruct).

Each family generates short questions with one exact answer at difficulty levels 1 (easiest) to 4 (hardest),
and every prompt asks for *only* the answer, so a small instruct model answers in a few tokens and the reward
needs no chain of thought. A prompt is a chat ``[{"role": "user", "content": ...}]``; its row also carries the
gold ``answer`` (a string), how to compare it (``answer_kind``: ``number``, ``word`` or ``choice``) and the
metadata columns ``family`` and ``level``.

Families (level meaning in brackets):

- ``add`` / ``sub`` / ``mul``: integer arithmetic [operand digit counts 1, 2, 3, 4; for ``mul`` 1x1, 2x1, 2x2, 3x2].
- ``compare``: the larger of two numbers [1, 2, 3, 4 digits; from level 3 on they share leading digits].
- ``parity``: is a number even or odd [1-2, 3, 4, 6 digits].
- ``count_letter``: how often a letter occurs in a word [word length 3-4, 5-6, 7-8, 9+].
- ``next_number``: the next term of a sequence [+1, +k small, -k or +k large, x2/x3].
- ``reverse_word``: a word spelled backwards [word length 3, 4-5, 6-7, 8+].
- ``unit_convert``: units to smaller units [factor 10/100/1000 or 60/24/12/7, times a 1- or 2-digit amount].
- ``letter_at``: the first, last, second or third-to-last letter of a word [in that order].
- ``copy_word``: repeat a word [word length 3, 4-5, 6-7, 8+].
- ``capital``: the capital city of a country [from the best known countries to less known ones].
- ``plural``: the plural of a noun [+s, +es, y -> ies, irregular].
- ``opposite``: the antonym of an adjective or adverb [from the most common pairs to rarer ones].

A gold answer may list alternatives separated by ``|`` (``small|little``); any of them passes.

``graded_dataset(n, families, levels, seed)`` spreads ``n`` distinct prompts evenly over the chosen
(family, level) cells; ``graded_reward(completions, answer, answer_kind)`` is TRL's reward signature and binary.

Answer parsing (``extract_answer``) reads the first non-empty line of the completion, and within it the text
after the last "answer is" / "answer:" / "=" / " is " when present (so "3 + 4 = 7" and "The answer is 7" both
give 7); a ``number`` is the first number there (``1,234`` and ``7.0`` are 1234 and 7), a ``word`` the first word
with quotes and punctuation stripped (case-insensitive; the line's first word is accepted too, for "Paris is the
capital"), a ``choice`` the first of the allowed words that occurs.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from .completions import completion_text

FAMILIES = (
    "add",
    "sub",
    "mul",
    "compare",
    "parity",
    "count_letter",
    "next_number",
    "reverse_word",
    "unit_convert",
    "letter_at",
    "copy_word",
    "capital",
    "plural",
    "opposite",
)
LEVELS = (1, 2, 3, 4)
ANSWER_KINDS = ("number", "word", "choice")
PARITY_CHOICES = ("even", "odd")

# Common English words, lower case, letters only: the word families draw from them by length.
WORDS = tuple(
    """
    cat dog sun hat cup pen box red map fox bus egg ice jam key owl pig rat toy van web zip ant bed car fan
    bird book cake door fish frog game hand kite lamp milk moon nest rain ship star tree wind wolf yard
    apple bread chair dance earth field grape horse juice lemon mouse night ocean paper queen river snake
    table tiger water zebra button candle dinner flower garden island jacket kitten letter market orange
    pencil rabbit silver summer window yellow animal balloon chicken diamond evening feather giraffe
    holiday kitchen library monster notebook octopus pancake rainbow sandwich teacher umbrella village
    blanket elephant mountain dinosaur hospital computer football sunshine treasure universe vacation
    alphabet adventure butterfly chocolate crocodile furniture happiness important landscape newspaper
    pineapple telephone vegetable waterfall wonderful basketball strawberry television helicopter
    """.split()
)

_UNITS_DECIMAL = (("meters", "centimeters", 100), ("kilometers", "meters", 1000), ("kilograms", "grams", 1000),
                  ("centimeters", "millimeters", 10), ("liters", "milliliters", 1000))
_UNITS_OTHER = (("hours", "minutes", 60), ("minutes", "seconds", 60), ("days", "hours", 24),
                ("weeks", "days", 7), ("feet", "inches", 12), ("years", "months", 12))

_JUST_NUMBER = "Reply with only the number."
_JUST_WORD = "Reply with only the word."
_JUST_LETTER = "Reply with only the letter."


def _digits(rng: random.Random, n: int) -> int:
    """A uniformly random integer with exactly ``n`` digits (1-digit numbers start at 1)."""
    return rng.randint(10 ** (n - 1) if n > 1 else 1, 10**n - 1)


def _words(min_len: int, max_len: int = 99) -> list[str]:
    return [w for w in WORDS if min_len <= len(w) <= max_len]


# ------------------------------------------------------------------------------------------------ families
# Each generator returns (question, answer, answer_kind) for one random instance at ``level``.
def _add(rng, level):
    a, b = _digits(rng, level), _digits(rng, level)
    return f"What is {a} + {b}? {_JUST_NUMBER}", str(a + b), "number"


def _sub(rng, level):
    a, b = sorted((_digits(rng, level), _digits(rng, level)), reverse=True)
    return f"What is {a} - {b}? {_JUST_NUMBER}", str(a - b), "number"


def _mul(rng, level):
    da, db = {1: (1, 1), 2: (2, 1), 3: (2, 2), 4: (3, 2)}[level]
    a, b = _digits(rng, da), _digits(rng, db)
    return f"What is {a} * {b}? {_JUST_NUMBER}", str(a * b), "number"


def _compare(rng, level):
    a = _digits(rng, level)
    while True:
        if level >= 3:  # same leading digits: only the last two (level 3) or last digit (level 4) differ
            keep = 10 ** (2 if level == 3 else 1)
            b = a // keep * keep + rng.randrange(keep)
        else:
            b = _digits(rng, level)
        if b != a and len(str(b)) == len(str(a)):
            break
    return f"Which number is larger, {a} or {b}? {_JUST_NUMBER}", str(max(a, b)), "number"


def _parity(rng, level):
    n = rng.randint(1, 99) if level == 1 else _digits(rng, {2: 3, 3: 4, 4: 6}[level])
    return f"Is {n} even or odd? Reply with only one word: even or odd.", PARITY_CHOICES[n % 2], "choice"


def _count_letter(rng, level):
    lo, hi = {1: (3, 4), 2: (5, 6), 3: (7, 8), 4: (9, 99)}[level]
    word = rng.choice(_words(lo, hi))
    letter = rng.choice(sorted(set(word)))
    return (
        f"How many times does the letter '{letter}' appear in the word '{word}'? {_JUST_NUMBER}",
        str(word.count(letter)),
        "number",
    )


def _next_number(rng, level):
    if level == 1:
        start, step = rng.randint(1, 60), 1
        terms = [start + i * step for i in range(4)]
        nxt = start + 4 * step
    elif level == 2:
        start, step = rng.randint(1, 20), rng.randint(2, 5)
        terms = [start + i * step for i in range(4)]
        nxt = start + 4 * step
    elif level == 3:
        step = rng.choice([-1, 1]) * rng.randint(6, 19)
        start = rng.randint(60, 99) if step < 0 else rng.randint(1, 40)
        terms = [start + i * step for i in range(4)]
        nxt = start + 4 * step
    else:
        start, ratio = rng.randint(1, 15), rng.choice([2, 3])
        terms = [start * ratio**i for i in range(4)]
        nxt = start * ratio**4
    seq = ", ".join(str(t) for t in terms)
    return f"What is the next number in the sequence {seq}, ...? {_JUST_NUMBER}", str(nxt), "number"


def _reverse_word(rng, level):
    lo, hi = {1: (3, 3), 2: (4, 5), 3: (6, 7), 4: (8, 99)}[level]
    word = rng.choice(_words(lo, hi))
    return f"Write the word '{word}' backwards. {_JUST_WORD}", word[::-1], "word"


def _unit_convert(rng, level):
    table = _UNITS_DECIMAL if level in (1, 3) else _UNITS_OTHER
    big, small, factor = rng.choice(table)
    amount = rng.randint(2, 9) if level <= 2 else rng.randint(11, 99)
    return f"How many {small} are in {amount} {big}? {_JUST_NUMBER}", str(amount * factor), "number"


def _letter_at(rng, level):
    word = rng.choice(_words(4))
    where, index = {1: ("first", 0), 2: ("last", -1), 3: ("second", 1), 4: ("third-to-last", -3)}[level]
    return f"What is the {where} letter of the word '{word}'? {_JUST_LETTER}", word[index], "word"


def _copy_word(rng, level):
    lo, hi = {1: (3, 3), 2: (4, 5), 3: (6, 7), 4: (8, 99)}[level]
    word = rng.choice(_words(lo, hi))
    return f"Repeat the word '{word}'. {_JUST_WORD}", word, "word"


# Single-word capitals only, so "the first word of the answer" is the whole answer.
CAPITALS = {
    1: {"France": "Paris", "Italy": "Rome", "Japan": "Tokyo", "England": "London", "Spain": "Madrid",
        "Germany": "Berlin", "Russia": "Moscow", "China": "Beijing", "Egypt": "Cairo", "Greece": "Athens"},
    2: {"Ireland": "Dublin", "Austria": "Vienna", "Portugal": "Lisbon", "Norway": "Oslo", "Sweden": "Stockholm",
        "Denmark": "Copenhagen", "Poland": "Warsaw", "Canada": "Ottawa", "Thailand": "Bangkok", "Cuba": "Havana"},
    3: {"Australia": "Canberra", "Turkey": "Ankara", "Brazil": "Brasilia", "Kenya": "Nairobi", "Peru": "Lima",
        "Hungary": "Budapest", "Finland": "Helsinki", "Chile": "Santiago", "Iran": "Tehran"},
    4: {"Mongolia": "Ulaanbaatar", "Nigeria": "Abuja", "Kazakhstan": "Astana", "Bolivia": "Sucre",
        "Morocco": "Rabat", "Ghana": "Accra", "Nepal": "Kathmandu", "Uruguay": "Montevideo", "Latvia": "Riga"},
}


def _capital(rng, level):
    country = rng.choice(sorted(CAPITALS[level]))
    return (f"What is the capital city of {country}? Reply with only the city name.",
            CAPITALS[level][country], "word")


PLURALS = {
    1: ["cat", "dog", "book", "car", "tree", "bird", "cup", "pen", "hat", "star", "door", "apple", "table",
        "river", "flower", "garden", "window", "chair", "lamp", "shoe"],
    2: ["box", "bus", "dish", "glass", "fox", "church", "brush", "class", "watch", "kiss", "dress", "match",
        "beach", "bench", "wish", "tax", "lunch", "peach", "boss", "couch"],
    3: ["baby", "city", "party", "story", "lady", "puppy", "family", "cherry", "country", "body", "penny",
        "berry", "army", "library", "hobby", "diary", "fly", "pony", "spy", "candy"],
    4: ["child", "mouse", "man", "woman", "foot", "tooth", "goose", "person", "ox", "leaf", "knife", "wolf",
        "life", "wife", "half", "shelf", "cactus", "fungus", "crisis", "thief"],
}
_IRREGULAR = {"child": "children", "mouse": "mice", "man": "men", "woman": "women", "foot": "feet",
              "tooth": "teeth", "goose": "geese", "person": "people|persons", "ox": "oxen", "leaf": "leaves",
              "knife": "knives", "wolf": "wolves", "life": "lives", "wife": "wives", "half": "halves",
              "shelf": "shelves", "cactus": "cacti|cactuses", "fungus": "fungi|funguses", "crisis": "crises",
              "thief": "thieves"}


def _plural(rng, level):
    noun = rng.choice(PLURALS[level])
    answer = {1: noun + "s", 2: noun + "es", 3: noun[:-1] + "ies"}.get(level) or _IRREGULAR[noun]
    return f"What is the plural of the word '{noun}'? {_JUST_WORD}", answer, "word"


OPPOSITES = {
    1: {"hot": "cold", "big": "small|little", "up": "down", "yes": "no", "day": "night", "good": "bad",
        "happy": "sad|unhappy", "fast": "slow", "open": "closed|close|shut", "black": "white", "in": "out",
        "old": "new|young", "tall": "short", "wet": "dry", "full": "empty"},
    2: {"heavy": "light", "early": "late", "rich": "poor", "hard": "soft|easy", "loud": "quiet|soft",
        "strong": "weak", "clean": "dirty", "thick": "thin", "cheap": "expensive", "deep": "shallow",
        "wide": "narrow", "sweet": "sour|bitter", "inside": "outside", "above": "below|beneath", "first": "last"},
    3: {"ancient": "modern|new", "brave": "cowardly|scared|afraid", "generous": "stingy|selfish|mean",
        "polite": "rude|impolite", "humble": "proud|arrogant", "rough": "smooth", "victory": "defeat|loss",
        "accept": "reject|refuse|decline", "maximum": "minimum", "arrive": "depart|leave", "rare": "common",
        "increase": "decrease", "entrance": "exit", "friend": "enemy|foe", "success": "failure"},
    4: {"transparent": "opaque", "verbose": "concise|terse|brief", "frugal": "extravagant|wasteful",
        "benevolent": "malevolent|cruel|evil", "optimist": "pessimist", "ascend": "descend",
        "temporary": "permanent", "scarce": "abundant|plentiful", "artificial": "natural", "expand":
        "contract|shrink", "vertical": "horizontal", "external": "internal", "voluntary": "involuntary|mandatory|compulsory",
        "synonym": "antonym", "convex": "concave"},
}


def _opposite(rng, level):
    word = rng.choice(sorted(OPPOSITES[level]))
    return f"What is the opposite of the word '{word}'? {_JUST_WORD}", OPPOSITES[level][word], "word"


GENERATORS: dict[str, Callable[[random.Random, int], tuple[str, str, str]]] = {
    "add": _add,
    "sub": _sub,
    "mul": _mul,
    "compare": _compare,
    "parity": _parity,
    "count_letter": _count_letter,
    "next_number": _next_number,
    "reverse_word": _reverse_word,
    "unit_convert": _unit_convert,
    "letter_at": _letter_at,
    "copy_word": _copy_word,
    "capital": _capital,
    "plural": _plural,
    "opposite": _opposite,
}
assert tuple(GENERATORS) == FAMILIES


# ------------------------------------------------------------------------------------------------- dataset
def _check_choice(kind: str, given, valid) -> list:
    if given is None:
        return list(valid)
    if isinstance(given, (str, int)):
        given = [given]
    given = list(given)
    unknown = [g for g in given if g not in valid]
    if unknown or not given:
        raise ValueError(f"Unknown graded-task {kind} {unknown or given}; valid {kind}: {list(valid)}.")
    return given


def graded_rows(n: int, families: Sequence[str] | None = None, levels: Sequence[int] | None = None, seed: int = 0):
    """``n`` distinct prompts as a list of dicts (see ``graded_dataset``)."""
    if int(n) < 1:
        raise ValueError(f"graded_dataset needs n >= 1 prompts, got {n}.")
    families = _check_choice("families", families, FAMILIES)
    levels = _check_choice("levels", levels, LEVELS)
    cells = [(f, lvl) for lvl in levels for f in families]  # level-major: a small n still covers every family
    rng = random.Random(seed)
    seen: set[str] = set()
    rows = []
    for i in range(int(n)):
        family, level = cells[i % len(cells)]  # round robin: cells differ in size by at most one
        for _attempt in range(200):
            question, answer, kind = GENERATORS[family](rng, level)
            if question not in seen:
                break
        else:
            raise ValueError(
                f"Could not draw {n} distinct prompts: the cell family={family!r}, level={level} ran out of "
                "distinct questions. Ask for fewer prompts or more families/levels."
            )
        seen.add(question)
        rows.append(
            {
                "prompt": [{"role": "user", "content": question}],
                "answer": answer,
                "answer_kind": kind,
                "family": family,
                "level": int(level),
            }
        )
    rng.shuffle(rows)
    return rows


def graded_dataset(n: int, families: Sequence[str] | None = None, levels: Sequence[int] | None = None, seed: int = 0):
    """A ``datasets.Dataset`` of ``n`` distinct graded prompts with columns ``prompt`` (chat), ``answer``,
    ``answer_kind``, ``family`` and ``level``, spread evenly over ``families`` x ``levels`` (default: all) and
    shuffled; the same arguments always give the same rows."""
    from datasets import Dataset

    return Dataset.from_list(graded_rows(n, families, levels, seed))


# ------------------------------------------------------------------------------------------------- reward
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")  # "1,234" is one number, "1, 2" two
_WORD = re.compile(r"[^\W\d_]+")
# Lead-ins before a stated answer, strongest first: "... = 7", "the answer is 7" / "Answer: 7", "... is 7",
# "Backwards: tac".
_LEAD_INS = (re.compile(r"="), re.compile(r"answer\s*(?:is\b|:)", re.IGNORECASE), re.compile(r"\bis\b", re.IGNORECASE),
             re.compile(r":"))


def _first_line(text: str) -> str:
    return next((ln for ln in str(text).splitlines() if ln.strip()), "")


def _answer_span(line: str, has_answer: Callable[[str], bool]) -> str:
    """The text after the last, strongest lead-in that is followed by something answer-shaped, else the line."""
    for lead_in in _LEAD_INS:
        matches = list(lead_in.finditer(line))
        if matches and has_answer(line[matches[-1].end() :]):
            return line[matches[-1].end() :]
    return line


def _to_number(token: str) -> float | None:
    try:
        return float(token.replace(",", ""))
    except ValueError:
        return None


def extract_answer(text: str, kind: str, choices: Sequence[str] = PARITY_CHOICES) -> str | None:
    """The short answer a completion gives, normalised for comparison, or ``None`` when it gives none."""
    if kind not in ANSWER_KINDS:
        raise ValueError(f"Unknown answer_kind {kind!r}; valid kinds: {list(ANSWER_KINDS)}.")
    line = _first_line(text)
    if kind == "number":
        match = _NUMBER.search(_answer_span(line, _NUMBER.search))
        return repr(_to_number(match.group())) if match else None
    if kind == "choice":
        pattern = re.compile(r"\b(" + "|".join(re.escape(c) for c in choices) + r")\b", re.IGNORECASE)
        match = pattern.search(_answer_span(line, pattern.search))
        return match.group(1).lower() if match else None
    match = _WORD.search(_answer_span(line, _WORD.search))
    return match.group().lower() if match else None


def answer_candidates(text: str, kind: str) -> set[str]:
    """What ``graded_reward`` accepts as the completion's answer: ``extract_answer``, and for a ``word`` also the
    line's first word ("Paris is the capital of France.")."""
    found = {extract_answer(text, kind)}
    if kind == "word":
        first = _WORD.search(_first_line(text))
        found.add(first.group().lower() if first else None)
    return found - {None}


def _normalise_gold(answer: str, kind: str) -> str:
    if kind == "number":
        value = _to_number(str(answer).strip())
        if value is None:
            raise ValueError(f"Gold answer {answer!r} of answer_kind 'number' is not a number.")
        return repr(value)
    return str(answer).strip().lower()


def _infer_kind(answer: str) -> str:
    return "number" if _to_number(str(answer).split("|")[0].strip()) is not None else "word"


def graded_reward(completions, answer, answer_kind=None, **kwargs) -> list[float]:
    """1.0 when the completion's short answer equals the gold ``answer``, else 0.0 (TRL reward signature).

    ``answer_kind`` (a dataset column) says how to compare; without it a numeric gold answer is compared as a
    number and anything else as a word.
    """
    if len(completions) != len(answer):
        raise ValueError(f"graded_reward got {len(completions)} completions but {len(answer)} answers.")
    kinds = list(answer_kind) if answer_kind is not None else [_infer_kind(a) for a in answer]
    rewards = []
    for completion, gold, kind in zip(completions, answer, kinds):
        accepted = {_normalise_gold(g, kind) for g in str(gold).split("|")}
        rewards.append(1.0 if answer_candidates(completion_text(completion), kind) & accepted else 0.0)
    return rewards


graded_reward.__name__ = "graded_reward"
