"""Every reliance on a private TRL / transformers name lives here.

DEPOTrainer overrides four private methods of ``trl.GRPOTrainer`` narrowly (each calls ``super()``) and reads
two private attributes. This module checks they exist when the package is imported, so a TRL release that
renames one fails loudly at import with the name, not silently mid-run.
"""

from __future__ import annotations

import os

import trl
from packaging.version import Version
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer

SUPPORTED_TRL = (Version("1.16.0"), Version("1.17.0"))

#: Private GRPOTrainer methods DEPOTrainer overrides (each override calls super()).
OVERRIDDEN_METHODS = (
    "_generate_and_score_completions",  # one call per generation round: DEPO picks the prompts before it
    "_calculate_rewards",  # returns the gathered (N, n_reward_funcs) rewards: DEPO's labels
    "_save_checkpoint",  # DEPO state goes beside the model checkpoint
    "_load_optimizer_and_scheduler",  # ... and comes back on resume
)


def check_trl_version() -> None:
    version = Version(trl.__version__)
    if not SUPPORTED_TRL[0] <= version < SUPPORTED_TRL[1]:
        raise ImportError(
            f"depo_trl supports trl>={SUPPORTED_TRL[0]},<{SUPPORTED_TRL[1]}, but trl {trl.__version__} is installed. "
            f"Install a supported release: pip install 'trl>={SUPPORTED_TRL[0]},<{SUPPORTED_TRL[1]}'."
        )
    missing = [name for name in OVERRIDDEN_METHODS if not hasattr(GRPOTrainer, name)]
    if missing:
        raise ImportError(f"trl {trl.__version__}'s GRPOTrainer lacks {missing}, which depo_trl overrides.")


def metrics(trainer) -> dict:
    """GRPOTrainer's metric store: ``metrics(trainer)["train"][name]`` is a list averaged at each log."""
    return trainer._metrics


def checkpoint_dir(trainer, trial) -> str:
    """The folder ``Trainer._save_checkpoint`` just wrote."""
    folder = f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"
    return os.path.join(trainer._get_output_dir(trial=trial), folder)
