"""The ``depo-trl`` command.

- ``depo-trl train --config recipe.yaml [--key value ...]``: train in this process from a YAML recipe (the
  script ``depo_trl.scripts.depo``; for several processes use
  ``accelerate launch -m depo_trl.scripts.depo --config recipe.yaml``).
- ``depo-trl report <output_dir>``: text summary and PNG plots of a finished (or checkpointed) run.

Without the console script installed: ``python -m depo_trl.cli ...``.
"""

from __future__ import annotations

import argparse
import sys

USAGE = """usage: depo-trl <command> [options]

commands:
  train --config recipe.yaml [--key value ...]   train with DEPO from a YAML recipe (flags override the YAML)
  report <output_dir> [--out DIR]                summary and plots of a run's logged history

Several processes (GPUs, DeepSpeed, FSDP):
  accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml -m depo_trl.scripts.depo --config recipe.yaml
Help on one command: depo-trl train --help, depo-trl report --help"""


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

        return report.run(report.make_parser(argparse.ArgumentParser(prog="depo-trl report")).parse_args(rest))
    print(f"depo-trl: error: unknown command {command!r}; use 'train' or 'report'.\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
