"""Built-in reward functions and prompt formatting for math tasks (GSM8K, MATH-style boxed answers).

Every reward function has TRL's signature ``fn(completions, **columns) -> list[float]``: ``completions`` is a
list of strings (standard datasets) or of ``[{"role": "assistant", "content": ...}]`` (conversational ones), and
each dataset column arrives as a keyword argument with one value per completion.

- ``gsm8k_accuracy``: 1.0 when the completion's final number equals the gold answer (the number after ``####`` in
  a GSM8K ``answer``, or the whole ``answer`` when it is just a number). The completion's final number is the
  last number inside the last ``\\boxed{...}``, else the first number after the last ``####``, else the last
  number in the text. Numbers are compared after normalisation: ``1,234``, ``$1234``, ``1234.0`` and ``1234.``
  are all 1234.
- ``math_accuracy``: 1.0 when the last ``\\boxed{...}`` of the completion matches the gold answer (column
  ``answer``, else ``solution``; a gold solution's own ``\\boxed{}`` is extracted). Uses ``math-verify`` when it is
  installed (``pip install math-verify``), and a string/number comparison of normalised LaTeX otherwise.
- ``format_reward``: 1.0 when the completion states a final answer in ``\\boxed{...}`` or after ``####``.

``REWARD_FUNCS`` maps registry names to functions; ``get_reward_funcs`` also accepts dotted import paths.
``DATASET_FORMATTERS`` turns raw rows into a conversational ``prompt`` (system prompt + question) and an ``answer``.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from .completions import completion_text
from .graded_tasks import graded_reward
from .tasks import ControlledReward, letters_reward

GSM8K_SYSTEM_PROMPT = (
    "Solve the math word problem step by step. At the end, give the final answer as a number, either in "
    "\\boxed{} (for example \\boxed{42}) or after '####' (for example '#### 42')."
)
MATH_SYSTEM_PROMPT = (
    "Solve the math problem step by step. At the end, put the final answer in \\boxed{}, for example \\boxed{\\frac{1}{2}}."
)

# ----------------------------------------------------------------------------------------------- text helpers


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced; ``None`` if absent."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        # "\boxed 5" (no braces) is valid LaTeX for a single token
        match = re.match(r"\\(?:boxed|fbox)\s+([^\s$]+)", text[start:])
        return match.group(1) if match else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None  # unbalanced: the completion was cut off inside the box


# A number: optional sign (not a hyphen between two words/numbers), thousands groups or plain digits, decimals.
_NUMBER_RE = re.compile(r"(?<![\w.)])(?:-\s?)?(?:(?:\d{1,3}(?:,\d{3})+(?![\d,])|\d+)(?:\.\d+)?|\.\d+)")


def find_numbers(text: str) -> list[str]:
    """Every number in ``text``, as written (``"1,234"``, ``"-3.5"``), after dropping ``$`` and LaTeX spacing."""
    text = text.replace("\\$", " ").replace("$", " ").replace("\\!", "").replace("{,}", ",")
    return [match.group(0) for match in _NUMBER_RE.finditer(text)]


def parse_number(text: str) -> Fraction | None:
    """``text`` as an exact number, or ``None``: accepts ``1,234``, ``$12``, ``12.50``, ``12.``, ``-3``, ``50%``,
    ``3/4`` and ``\\frac{3}{4}`` (also ``\\dfrac``, with an optional sign)."""
    s = text.strip()
    for junk in ("\\$", "$", "\\%", "%", "\\!", "\\,", " ", "\u2212"):
        s = s.replace(junk, "-" if junk == "\u2212" else "")
    s = s.replace("{,}", ",").rstrip(".")
    if re.fullmatch(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|-?\.\d+", s):
        try:
            return Fraction(Decimal(s.replace(",", "")))
        except (InvalidOperation, ValueError):
            return None
    match = re.fullmatch(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}", s) or re.fullmatch(r"(-?)(\d+)/(\d+)", s)
    if match and int(match.group(3)) != 0:
        value = Fraction(int(match.group(2)), int(match.group(3)))
        return -value if match.group(1) else value
    return None


def normalize_number(text: str) -> str | None:
    """Canonical string of a number (``"1,234.00"`` -> ``"1234"``, ``"0.50"`` -> ``"0.5"``), or ``None``."""
    value = parse_number(text)
    if value is None:
        return None
    if value.denominator == 1:
        return str(value.numerator)
    decimal = Decimal(value.numerator) / Decimal(value.denominator)
    return format(decimal.normalize(), "f") if len(str(decimal)) < 20 else f"{value.numerator}/{value.denominator}"


# ----------------------------------------------------------------------------------------------- GSM8K


def extract_gsm8k_gold(answer: str) -> str:
    """The final answer of a GSM8K solution: the text after the last ``####`` (or all of it when there is none)."""
    return answer.rsplit("####", 1)[-1].strip()


def extract_final_number(text: str) -> str | None:
    """A completion's final number: last number in the last ``\\boxed{}``, else first after ``####``, else the last."""
    boxed = last_boxed(text)
    if boxed is not None:
        numbers = find_numbers(boxed)
        if numbers:
            return numbers[-1]
    if "####" in text:
        numbers = find_numbers(text.rsplit("####", 1)[-1])
        if numbers:
            return numbers[0]
    numbers = find_numbers(text)
    return numbers[-1] if numbers else None


def gsm8k_accuracy(completions, answer, **kwargs) -> list[float]:
    """1.0 when the completion's final number equals the GSM8K gold answer, else 0.0 (see module docstring)."""
    rewards = []
    for completion, gold_text in zip(completions, answer, strict=True):
        gold = parse_number(extract_gsm8k_gold(str(gold_text)))
        if gold is None:
            raise ValueError(
                f"gsm8k_accuracy could not read a number from the gold answer {str(gold_text)[-80:]!r}. It expects "
                "GSM8K's 'answer' column (a solution ending in '#### <number>') or a bare number; format the dataset "
                "with dataset_format: gsm8k, or use math_accuracy for non-numeric answers."
            )
        predicted = extract_final_number(completion_text(completion))
        value = parse_number(predicted) if predicted is not None else None
        rewards.append(1.0 if value is not None and value == gold else 0.0)
    return rewards


# ----------------------------------------------------------------------------------------------- MATH-style

_LATEX_DROP = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\quad", "\\qquad", "\\displaystyle", "$", "\\$")


def normalize_latex(text: str) -> str:
    """A canonical form of a short LaTeX answer for string comparison (fallback when math-verify is absent)."""
    s = text.strip()
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", s)
    for junk in _LATEX_DROP:
        s = s.replace(junk, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("^\\circ", "").replace("^{\\circ}", "")
    s = s.replace("\\%", "").replace("%", "").replace("\u2212", "-")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)  # \frac12 -> \frac{1}{2}
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = re.sub(r"\s+", "", s).rstrip(".")
    s = re.sub(r"^[a-zA-Z]=", "", s)  # "x=5" -> "5"
    return s


def _math_equal_fallback(predicted: str, gold: str) -> bool:
    a, b = normalize_latex(predicted), normalize_latex(gold)
    if a == b and a:
        return True
    x, y = parse_number(a), parse_number(b)
    return x is not None and y is not None and x == y


def _math_verify():
    try:
        from math_verify import parse, verify
    except ImportError:
        return None
    return parse, verify


def math_answers_equal(predicted: str, gold: str) -> bool:
    """Whether two final answers (the content of ``\\boxed{}``) are equal; math-verify when available."""
    if _math_equal_fallback(predicted, gold):
        return True
    backend = _math_verify()
    if backend is None:
        return False
    parse, verify = backend
    try:
        return bool(verify(parse(f"\\boxed{{{gold}}}"), parse(f"\\boxed{{{predicted}}}")))
    except Exception:  # math-verify can raise on odd input (or time out); a failure to verify is not a pass
        return False


def math_gold(value) -> str:
    """The gold final answer from an ``answer`` value or a full ``solution`` (its last ``\\boxed{}``)."""
    text = str(value)
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    return extract_gsm8k_gold(text) if "####" in text else text.strip()


def math_accuracy(completions, answer=None, solution=None, **kwargs) -> list[float]:
    """1.0 when the completion's last ``\\boxed{}`` (or its ``#### x``) equals the gold answer, else 0.0."""
    golds = answer if answer is not None else solution
    if golds is None:
        raise ValueError(
            "math_accuracy needs the gold answer in a column named 'answer' or 'solution'; the dataset has neither. "
            "Rename the column, or format the dataset with dataset_format: math."
        )
    rewards = []
    for completion, gold in zip(completions, golds, strict=True):
        text = completion_text(completion)
        predicted = last_boxed(text)
        if predicted is None and "####" in text:
            predicted = extract_gsm8k_gold(text)
        rewards.append(1.0 if predicted and math_answers_equal(predicted, math_gold(gold)) else 0.0)
    return rewards


# ----------------------------------------------------------------------------------------------- format


def format_reward(completions, **kwargs) -> list[float]:
    """1.0 when the completion states a final answer in a non-empty ``\\boxed{...}`` or after ``####``, else 0.0."""
    rewards = []
    for completion in completions:
        text = completion_text(completion)
        boxed = last_boxed(text)
        has_answer = bool(boxed and boxed.strip()) or bool(re.search(r"####\s*\S", text))
        rewards.append(1.0 if has_answer else 0.0)
    return rewards


# ----------------------------------------------------------------------------------------------- registry

controlled_reward = ControlledReward(seed=0)

REWARD_FUNCS: dict[str, Callable] = {
    "gsm8k_accuracy": gsm8k_accuracy,
    "math_accuracy": math_accuracy,
    "format_reward": format_reward,
    "letters_reward": letters_reward,  # depo:letters (depo_trl.tasks)
    "controlled_reward": controlled_reward,  # depo:controlled (depo_trl.tasks), seeded
    "graded_reward": graded_reward,  # depo:graded (depo_trl.graded_tasks)
}


def get_reward_func(name: str) -> Callable:
    """A reward function from its registry name (``REWARD_FUNCS``) or a dotted path ``package.module.function``.

    A dotted path is imported with the working directory on ``sys.path``, so ``my_rewards.fn`` finds a
    ``my_rewards.py`` next to the recipe you launch from. A class found there is instantiated with no arguments.
    """
    if name in REWARD_FUNCS:
        return REWARD_FUNCS[name]
    if "." not in name:
        raise ValueError(
            f"Unknown reward function {name!r}. Use one of {sorted(REWARD_FUNCS)} or a dotted import path such as "
            "'my_package.rewards.my_reward'."
        )
    module_name, attribute = name.rsplit(".", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"Could not import module {module_name!r} for reward function {name!r}: {exc}") from exc
    if not hasattr(module, attribute):
        raise ValueError(f"Module {module_name!r} has no attribute {attribute!r} (reward function {name!r}).")
    func = getattr(module, attribute)
    if isinstance(func, type):
        func = func()
    if not callable(func):
        raise ValueError(f"Reward function {name!r} is a {type(func).__name__}, not a callable.")
    return func


def get_reward_funcs(names: list[str] | str) -> list[Callable]:
    """``get_reward_func`` for each name; a comma-separated string works too."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    return [get_reward_func(name) for name in names]


# ----------------------------------------------------------------------------------------------- prompt formatting


def _messages(system_prompt: str | None, question: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": question.strip()}]


def format_gsm8k(example: dict, system_prompt: str | None = GSM8K_SYSTEM_PROMPT) -> dict:
    """A GSM8K row (``question``, ``answer``) -> conversational ``prompt`` and ``answer`` (the bare gold number)."""
    for column in ("question", "answer"):
        if column not in example:
            raise ValueError(f"A GSM8K row needs a {column!r} column; this row has {sorted(example)}.")
    gold = normalize_number(extract_gsm8k_gold(example["answer"]))
    if gold is None:
        raise ValueError(f"GSM8K answer has no final number after '####': {example['answer'][-80:]!r}")
    return {"prompt": _messages(system_prompt, example["question"]), "answer": gold}


_MATH_QUESTION_COLUMNS = ("problem", "question", "prompt")


def format_math(example: dict, system_prompt: str | None = MATH_SYSTEM_PROMPT) -> dict:
    """A MATH-style row -> conversational ``prompt`` and ``answer``.

    The question is the first of ``problem``, ``question``, ``prompt`` (a string, or a list of messages whose last
    user message is used); the gold is ``answer`` if present, else the last ``\\boxed{}`` of ``solution``.
    """
    question = next((example[c] for c in _MATH_QUESTION_COLUMNS if c in example and example[c]), None)
    if isinstance(question, list):  # already conversational: keep the user's last message
        question = next((m["content"] for m in reversed(question) if m.get("role") == "user"), None)
    if not isinstance(question, str):
        raise ValueError(f"A MATH-style row needs one of {_MATH_QUESTION_COLUMNS}; this row has {sorted(example)}.")
    gold = example.get("answer") if example.get("answer") not in (None, "") else example.get("solution")
    if gold is None:
        raise ValueError(f"A MATH-style row needs an 'answer' or 'solution' column; this row has {sorted(example)}.")
    return {"prompt": _messages(system_prompt, question), "answer": math_gold(gold)}


DATASET_FORMATTERS: dict[str, Callable[..., dict]] = {"gsm8k": format_gsm8k, "math": format_math}
DEFAULT_SYSTEM_PROMPTS = {"gsm8k": GSM8K_SYSTEM_PROMPT, "math": MATH_SYSTEM_PROMPT}


def format_dataset(dataset, name: str, system_prompt: str | None = None):
    """Apply the formatter ``name`` (``"gsm8k"`` or ``"math"``) to a ``datasets`` dataset.

    The result has the columns ``prompt`` and ``answer`` (other columns are dropped, so a raw ``prompt`` column
    cannot shadow the formatted one). ``system_prompt`` replaces the formatter's default system prompt.
    """
    if name not in DATASET_FORMATTERS:
        raise ValueError(f"Unknown dataset_format {name!r}. Use one of {sorted(DATASET_FORMATTERS)}, or none.")
    formatter = DATASET_FORMATTERS[name]
    prompt = DEFAULT_SYSTEM_PROMPTS[name] if system_prompt is None else system_prompt
    columns = getattr(dataset, "column_names", None)
    return dataset.map(lambda row: formatter(row, system_prompt=prompt), remove_columns=columns)
