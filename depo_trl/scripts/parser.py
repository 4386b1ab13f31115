"""``DEPOParser``: TRL's ``TrlParser`` (YAML ``--config`` + command-line flags) that rejects unknown keys by name.

TRL's own parser leaves unknown keys for ``accelerate launch`` to reject with an unhelpful message (see DESIGN.md
section 3). This one raises ``UnknownArgumentsError`` naming each unknown key, where it came from (the YAML file
or the command line) and the closest known key.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterable

import yaml
from trl import TrlParser


class UnknownArgumentsError(ValueError):
    """A recipe or command line holds keys that no configuration class knows."""


class DEPOParser(TrlParser):
    """A ``TrlParser`` for which every key of the YAML file and every flag must belong to one of its dataclasses.

    Flags are exact: argparse's prefix matching is off (``allow_abbrev=False``), so ``--depo_warmup_step 3`` is an
    unknown key (with ``depo_warmup_steps`` suggested), as it is in a YAML recipe.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def known_keys(self) -> list[str]:
        return sorted({action.dest for action in self._actions if action.dest not in ("help", "config")})

    def parse_args_and_config(self, args: Iterable[str] | None = None, **kwargs) -> tuple:
        """Parse ``--config recipe.yaml`` then command-line flags (which win) into one instance per dataclass.

        Unknown keys are looked for first, before any dataclass is built, so the error is about them and not about
        a value that a half-read recipe left at its default.
        """
        args = _split_equals(list(args) if args is not None else sys.argv[1:])
        flags, config_path = list(args), None
        if "--config" in flags:
            position = flags.index("--config")
            if position + 1 >= len(flags) or flags[position + 1].startswith("--"):
                raise UnknownArgumentsError("--config needs the path of a YAML recipe, e.g. --config recipe.yaml")
            config_path = flags[position + 1]
            del flags[position : position + 2]
        problems = [self._describe("--" + key, f"in {config_path}") for key in self._unknown_config_keys(config_path)]
        _, remaining = self.parse_known_args(flags)
        problems += [self._describe(key, "on the command line") for key in _command_line_keys(remaining)]
        if problems:
            raise UnknownArgumentsError(
                "\n".join(problems)
                + f"\nEvery key must be a field of {', '.join(t.__name__ for t in self.dataclass_types)}; "
                "run with --help to list them."
            )
        return super().parse_args_and_config(args)

    def _unknown_config_keys(self, config_path: str | None) -> list[str]:
        if config_path is None:
            return []
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"Recipe {config_path!r} not found (working directory: {os.getcwd()}).")
        with open(config_path) as f:
            config = yaml.safe_load(f)
        if not isinstance(config, dict):
            raise UnknownArgumentsError(f"Recipe {config_path} must be a YAML mapping of keys to values.")
        known = set(self.known_keys()) | {"env"}  # TrlParser exports `env:` entries as environment variables
        return [str(key) for key in config if key not in known]

    def _describe(self, key: str, where: str) -> str:
        if not key.startswith("--"):
            hint = " A recipe is passed as --config recipe.yaml." if key.endswith((".yaml", ".yml")) else ""
            return f"Unexpected argument {key!r} {where}.{hint}"
        key = key[2:]
        close = difflib.get_close_matches(key, self.known_keys(), n=1, cutoff=0.75)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"Unknown key {key!r} {where}.{hint}"


def _split_equals(args: list[str]) -> list[str]:
    """``--config=x.yaml`` -> ``--config x.yaml`` (TrlParser only looks for the separate form)."""
    out = []
    for arg in args:
        if arg.startswith("--config="):
            out += ["--config", arg.split("=", 1)[1]]
        else:
            out.append(arg)
    return out


def _command_line_keys(remaining: list[str]) -> list[str]:
    """The flags (``--name``) among unparsed command-line strings, plus any value that has no flag before it."""
    keys = []
    for item in remaining:
        if item.startswith("--"):
            keys.append(item.split("=", 1)[0])
        elif not keys:
            keys.append(item)
    return keys
