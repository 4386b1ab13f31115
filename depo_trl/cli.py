"""The ``depo-trl`` command.

- ``depo-trl train --config recipe.yaml [--key value ...]``: train in this process from a YAML recipe (the
  script ``depo_trl.scripts.depo``; for several processes use
  ``accelerate launch -m depo_trl.scripts.depo --config recipe.yaml``).
- ``depo-trl report <output_dir>``: text summary and PNG plots of a finished (or checkpointed) run.
- ``depo-trl route <output_dir> --prompts prompts.jsonl --tau 0.5``: predict each prompt's pass rate under the
  run's policy with its saved DEPO state, and route it to the small model (>= tau) or a larger one.

Without the console script installed: ``python -m depo_trl.cli ...``.
"""

from __future__ import annotations

import argparse
import sys

USAGE = """usage: depo-trl <command> [options]

commands:
  train --config recipe.yaml [--key value ...]   train with DEPO from a YAML recipe (flags override the YAML)
  report <output_dir> [--out DIR]                summary and plots of a run's logged history
  route <output_dir> --prompts FILE [--tau 0.5]  which prompts the trained small model keeps, which go to a larger one

Several processes (GPUs, DeepSpeed, FSDP):
  accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml -m depo_trl.scripts.depo --config recipe.yaml
Help on one command: depo-trl train --help, depo-trl report --help, depo-trl route --help"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        from .scripts.depo import run

        return run(rest, prog="depo-trl train")
    if command == "report":
        from . import report

        parser = argparse.ArgumentParser(prog="depo-trl report", allow_abbrev=False)  # exact flags only
        return report.run(report.make_parser(parser).parse_args(rest))
    if command == "route":
        from . import route

        parser = argparse.ArgumentParser(prog="depo-trl route", allow_abbrev=False)
        return route.run(route.make_parser(parser).parse_args(rest))
    print(f"depo-trl: error: unknown command {command!r}; use 'train', 'report' or 'route'.\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
