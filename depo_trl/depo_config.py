"""Configuration of DEPOTrainer: GRPOConfig plus the ``depo_*`` fields."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from .deepspeed_checks import check_deepspeed_precision
from .estimators import resolve_estimator_class
from .exploration import DEFAULT_YIELD_RANGE, check_yield_range
from .features import check_feature_names
from .selection import check_band, check_exploration, check_policy_name

EMBEDDING_POOLINGS = ("mean", "last")
EMBEDDING_ADAPTER = ("on", "off")
#: Loss types whose normaliser counts the loss mask's tokens (``bnpo``: this micro-batch's mask; ``dapo``, ``cispo``,
#: ``vespo``: ``num_items_in_batch``), so rows left out of the mask really leave the loss. The others average per
#: sequence over the batch (``grpo``, ``sapo``, ``luspo``) or divide by a constant (``dr_grpo``): a masked row still
#: counts there, so masking would change nothing.
MASKABLE_LOSS_TYPES = ("bnpo", "dapo", "cispo", "vespo")


@dataclass
class DEPOConfig(GRPOConfig):
    r"""
    Configuration class for [`DEPOTrainer`]: every [`~trl.GRPOConfig`] parameter, plus the ones below.

    DEPO (Difficulty-Estimated Policy Optimization) scores `depo_candidate_multiplier` candidate prompts for
    every prompt it rolls out, predicts each candidate's pass rate with an online estimator, and generates
    completions only for the chosen ones (in the target band first, then an exploration share from outside it).

    Parameters:
        depo_candidate_multiplier (`int`, *optional*, defaults to `4`):
            Candidate prompts scored per prompt rolled out (K). Each generation round scores K x U candidates,
            where U = generation_batch_size / num_generations, and rolls out U of them. `1` disables filtering.
        depo_band_low (`float`, *optional*, defaults to `0.15`):
            Lower end of the target band of predicted pass rate.
        depo_band_high (`float`, *optional*, defaults to `0.85`):
            Upper end of the target band of predicted pass rate.
        depo_warmup_steps (`int`, *optional*, defaults to `10`):
            Optimizer steps during which nothing is filtered (the trainer behaves exactly like GRPOTrainer) while
            the estimator learns from every rolled-out prompt.
        depo_reference_every (`int`, *optional*, defaults to `0`):
            Every this many optimizer steps after warm-up, one *reference step*: it does what a warm-up step does
            (rolls out and trains on GRPO's own uniform batch, which the estimator learns from) and logs its
            useful-group share as `depo/reference_useful_group_share`, a uniform reference measured on the current
            policy. The console, the end summary and `depo-trl report` then compare DEPO against it instead of the
            warm-up rounds' share (measured before training moved the policy). With warm-up W and N, steps W + N,
            W + 2N, ... are reference steps; they cost what they measure: those steps train as GRPO, without
            selection. `0` (the default) turns reference steps off; otherwise use at least `2`.
        depo_exploration (`float`, *optional*, defaults to `0.1`):
            Expected fraction of each round's rollouts spent on prompts predicted outside the band, so the
            estimator keeps seeing them and skipped prompts can come back.
        depo_adaptive_exploration (`bool`, *optional*, defaults to `True`):
            Scale the exploration share each round by how often exploration picks have given mixed groups relative
            to the policy's own picks (full share at a ratio of 0.5 or more, a tenth of it at 0.4 or less; see
            `depo_trl.exploration`). The ratio is logged as `depo/exploration_yield` either way.
        depo_exploration_yield_range (`list[float]`, *optional*, defaults to `[0.4, 0.5]`):
            The exploration yields at which the adaptive share is a tenth of `depo_exploration` and all of it. The
            defaults sit between the yields measured where exploration pays (about 0.5) and where it is waste
            (0.33-0.37); see docs/benchmarks.md.
        depo_estimator (`str`, *optional*, defaults to `"logistic"`):
            Pass-rate estimator: a registry name (see `depo_trl.estimators.ESTIMATORS`) or a dotted path
            `module.ClassName`. An estimator instance can also be passed to `DEPOTrainer(estimator=...)`.
        depo_estimator_kwargs (`dict` or `str`, *optional*):
            Keyword arguments for the estimator's constructor.
        depo_features (`list[str]`, *optional*, defaults to `["length", "history", "embedding"]`):
            Feature groups fed to the estimator (see `depo_trl.features.FEATURE_GROUPS`): `"length"`, `"text"`,
            `"metadata"`, `"history"`, `"embedding"` and `"answer_likelihood"` (the policy's teacher-forced
            log-likelihood of the dataset's reference answer, computed in the embedding prefill; reads the column
            `answer` unless `depo_feature_options={"answer_likelihood": {"column": ...}}` says otherwise).
        depo_feature_options (`dict` or `str`, *optional*):
            Options per feature group, e.g. `{"text": {"dim": 64}, "metadata": {"columns": ["level", "subject"]}}`.
        depo_selection (`str`, *optional*, defaults to `"band"`):
            Selection policy (see `depo_trl.selection.SELECTION_POLICIES`): `"band"` (the paper: predicted pass rate
            in the band, most useful first), `"band_uniform"` (in the band, drawn at random), `"band_weighted"` (as
            `"band"`, exploring in proportion to expected usefulness instead of uniformly), `"usefulness"` (rank
            everything by the expected chance that a group is not all-equal, using the estimator's uncertainty),
            `"thompson"` (rank a posterior draw) or `"proportional"` (draw every pick in proportion to that chance:
            no band, no ranking).
        depo_revisit_after (`int`, *optional*, defaults to `256`):
            A candidate not rolled out for this many rounds since it was last seen is rolled out first (a revisit
            floor, so a stale verdict never starves a prompt). `None` disables the floor.
        depo_mask_zero_variance (`bool`, *optional*, defaults to `False`):
            Leave groups to which TRL gives zero advantage (all-equal rewards, unscorable completions left out) out
            of the loss and its normaliser (DAPO's filter, without re-sampling). Only the loss mask changes, never
            the attention mask. Needs a loss type that normalises by token count (`dapo`, `bnpo`, `cispo`,
            `vespo`); other loss types are refused.
        depo_warm_start_path (`str`, *optional*):
            A JSONL of measured pass rates (`prompt`/`problem` + `pass_rate`/`successes_of_N`/`passes`,`trials`) to
            fit the estimator on before the first round, with the same features as training (embeddings from the
            initial policy). Plain-string prompts are rendered like the training prompts: when those are chats, the
            string becomes the last user turn of the first training prompt (same system prompt), so features and
            prompt keys match. With `metadata` features every row must carry the metadata columns.
        depo_warm_start_max_prompts (`int`, *optional*, defaults to `4096`):
            Most rows read from `depo_warm_start_path`.
        depo_pass_reward (`str`, *optional*):
            Name of the reward function whose value decides whether a completion passes, or several names separated by
            commas (a priority list): each prompt is judged by the first of them that scores it (a reward returning
            `None` for every completion of a prompt does not apply to it). Defaults to every reward function in order:
            the first decides, the others only judge prompts it returns `None` for (a warning names the choice when
            there are several).
        depo_pass_threshold (`float`, *optional*, defaults to `0.5`):
            A completion passes when its `depo_pass_reward` value is >= this threshold. The estimator learns from
            this binary pass signal, never from a shaped reward.
        depo_embedding_pooling (`str`, *optional*, defaults to `"mean"`):
            How the policy's last hidden states of a prompt are pooled: `"mean"` (masked mean) or `"last"`.
        depo_embedding_dim (`int`, *optional*, defaults to `16`):
            Columns the pooled embedding is reduced to (PCA learnt from the first 256 embeddings, then frozen).
        depo_embedding_max_length (`int`, *optional*, defaults to `512`):
            Prompts longer than this many tokens are truncated (from the left) for embedding only; generation
            always sees the full prompt.
        depo_embedding_batch_size (`int`, *optional*, defaults to `16`):
            Prompts per forward pass when embedding.
        depo_embedding_adapter (`str`, *optional*, defaults to `"on"`):
            With a PEFT model, embed with the adapter `"on"` (the current policy) or `"off"` (the frozen base model:
            features that do not drift as the adapter trains).
        depo_embedding_refresh_every (`int`, *optional*, defaults to `1`):
            Re-embed a prompt only when its cached embedding is this many rounds old (1 = every round).
        depo_history_max_prompts (`int`, *optional*, defaults to `1000000`):
            Most prompts whose history is kept; the least recently seen are forgotten first.
        depo_max_rollouts_per_epoch (`int` or `None`, *optional*, defaults to `1`):
            Most times one prompt is rolled out per epoch. Under DEPO an epoch is one pass of the candidate walk
            (every prompt offered once; `num_train_epochs`, `max_steps` and the progress bar count these), so after
            warm-up a prompt is offered at most once per epoch anyway; the cap also counts warm-up rollouts, which
            come from GRPO's own order. `None` disables the cap (for a map-style train_dataset).
        depo_audit_log (`bool`, *optional*, defaults to `True`):
            Write every round's decisions (prompt, prediction, selected or skipped and why, observed passes) to
            `<output_dir>/depo_decisions.jsonl`.
        depo_audit_max_mb (`float`, *optional*, defaults to `64`):
            Size at which the decision log is rotated (one previous file is kept).
        depo_console (`str`, *optional*, defaults to `"depo"`):
            What the console shows during training. `"depo"`: the progress bar, one compact DEPO line every
            `depo_console_every` steps and one summary table at the end (`depo_trl.console.DEPOConsole`). `"trl"`:
            TRL's own console (every logged dict in full). Either way every metric reaches `report_to` and
            `trainer_state.json`.
        depo_console_every (`int`, *optional*, defaults to `5`):
            Optimizer steps between two DEPO console lines (a line needs a logged window: keep `logging_steps` at or
            below it).
    """

    _VALID_DICT_FIELDS = GRPOConfig._VALID_DICT_FIELDS + ["depo_estimator_kwargs", "depo_feature_options"]

    depo_candidate_multiplier: int = field(
        default=4,
        metadata={"help": "Candidate prompts scored per prompt rolled out (K). 1 disables filtering."},
    )
    depo_band_low: float = field(
        default=0.15, metadata={"help": "Lower end of the target band of predicted pass rate."}
    )
    depo_band_high: float = field(
        default=0.85, metadata={"help": "Upper end of the target band of predicted pass rate."}
    )
    depo_warmup_steps: int = field(
        default=10,
        metadata={"help": "Optimizer steps without filtering (plain GRPO) while the estimator learns."},
    )
    depo_reference_every: int = field(
        default=0,
        metadata={"help": "Every this many steps after warm-up, one reference step: GRPO's uniform batch, trained "
                  "on and logged as the uniform useful-share reference on the current policy. 0: off; else >= 2."},
    )
    depo_exploration: float = field(
        default=0.1,
        metadata={"help": "Expected fraction of rollouts spent on prompts predicted outside the band."},
    )
    depo_adaptive_exploration: bool = field(
        default=True,
        metadata={"help": "Scale the exploration share by the useful rate of exploration picks relative to the "
                  "policy's picks (logged as depo/exploration_yield either way)."},
    )
    depo_exploration_yield_range: list[float] = field(
        default_factory=lambda: list(DEFAULT_YIELD_RANGE),
        metadata={"help": "Exploration yields [low, high] at which the adaptive share is a tenth of "
                  "depo_exploration and all of it."},
    )
    depo_estimator: str = field(
        default="logistic",
        metadata={"help": "Pass-rate estimator: a registry name such as 'logistic', or a dotted path to a class."},
    )
    depo_estimator_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Keyword arguments for the estimator's constructor."}
    )
    depo_features: list[str] = field(
        default_factory=lambda: ["length", "history", "embedding"],
        metadata={"help": "Feature groups fed to the estimator: any of 'length', 'text', 'metadata', 'history', "
                  "'embedding', 'answer_likelihood'."},
    )
    depo_feature_options: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Options per feature group, e.g. {'text': {'dim': 64}}."}
    )
    depo_selection: str = field(
        default="band",
        metadata={"help": "Selection policy: 'band', 'band_uniform', 'band_weighted', 'usefulness', 'thompson' or "
                         "'proportional'."},
    )
    depo_revisit_after: int | None = field(
        default=256, metadata={"help": "Rounds after which a skipped, previously seen prompt is revisited first."}
    )
    depo_mask_zero_variance: bool = field(
        default=False,
        metadata={"help": "Leave zero-advantage groups out of the loss and its normaliser (DAPO's filter). Needs "
                  "loss_type dapo, bnpo, cispo or vespo."},
    )
    depo_warm_start_path: str | None = field(
        default=None, metadata={"help": "JSONL of measured pass rates to fit the estimator on before training."}
    )
    depo_warm_start_max_prompts: int = field(
        default=4096, metadata={"help": "Most rows read from depo_warm_start_path."}
    )
    depo_pass_reward: str | None = field(
        default=None,
        metadata={
            "help": "Reward function that decides a pass, or a comma-separated priority list (the first that scores a "
            "prompt decides). Defaults to every reward function in order, i.e. the first one."
        },
    )
    depo_pass_threshold: float = field(
        default=0.5, metadata={"help": "A completion passes when its pass reward is >= this value."}
    )
    depo_embedding_pooling: str = field(
        default="mean", metadata={"help": "Pooling of the policy's last hidden states: 'mean' or 'last'."}
    )
    depo_embedding_dim: int = field(
        default=16, metadata={"help": "Dimension the pooled embedding is reduced to (PCA fitted on the first embeddings)."}
    )
    depo_embedding_max_length: int = field(
        default=512, metadata={"help": "Prompts are truncated to this many tokens for embedding only."}
    )
    depo_embedding_batch_size: int = field(default=16, metadata={"help": "Prompts per embedding forward pass."})
    depo_embedding_adapter: str = field(
        default="on", metadata={"help": "With PEFT, embed with the adapter 'on' (policy) or 'off' (base model)."}
    )
    depo_embedding_refresh_every: int = field(
        default=1, metadata={"help": "Re-embed a prompt when its cached embedding is this many rounds old."}
    )
    depo_history_max_prompts: int = field(
        default=1_000_000, metadata={"help": "Most prompts whose history is kept in memory."}
    )

    depo_max_rollouts_per_epoch: int | None = field(
        default=1,
        metadata={"help": "Most rollouts of one prompt per epoch (one pass of the candidate walk); None: no cap."},
    )

    depo_audit_log: bool = field(
        default=True, metadata={"help": "Write every round's decisions to <output_dir>/depo_decisions.jsonl."}
    )
    depo_audit_max_mb: float = field(
        default=64.0, metadata={"help": "Size in MiB at which the decision log is rotated (one old file kept)."}
    )

    depo_console: str = field(
        default="depo",
        metadata={
            "help": "Console during training: 'depo' (progress bar, one compact DEPO line every depo_console_every "
            "steps, one summary table at the end) or 'trl' (TRL's full per-step dicts). Metrics reach report_to and "
            "trainer_state.json either way.",
            "choices": ["depo", "trl"],
        },
    )
    depo_console_every: int = field(
        default=5, metadata={"help": "Optimizer steps between two DEPO console lines (depo_console='depo')."}
    )

    def __post_init__(self):
        super().__post_init__()
        check_deepspeed_precision(self)  # before transformers' late, unexplained DeepSpeed mismatch error
        if isinstance(self.depo_features, str):  # "length,history" from a command line
            self.depo_features = [name.strip() for name in self.depo_features.split(",") if name.strip()]
        if self.depo_estimator_kwargs is None:
            self.depo_estimator_kwargs = {}
        if self.depo_feature_options is None:
            self.depo_feature_options = {}
        self._validate_depo()

    def _validate_depo(self) -> None:
        def fail(problem: str, fix: str):
            raise ValueError(f"{problem} {fix}")

        if not isinstance(self.depo_candidate_multiplier, int) or self.depo_candidate_multiplier < 1:
            fail(
                f"depo_candidate_multiplier must be an integer >= 1, got {self.depo_candidate_multiplier!r}.",
                "Use 1 to score only the prompts that are rolled out, or e.g. 4 to score four candidates per rollout.",
            )
        check_band(self.depo_band_low, self.depo_band_high, names=("depo_band_low", "depo_band_high"))
        check_exploration(self.depo_exploration, name="depo_exploration")
        if not isinstance(self.depo_adaptive_exploration, bool):
            fail(f"depo_adaptive_exploration must be true or false, got {self.depo_adaptive_exploration!r}.",
                 "Use true to let the exploration share follow its measured yield, false to keep it fixed.")
        self.depo_exploration_yield_range = list(
            check_yield_range(self.depo_exploration_yield_range, name="depo_exploration_yield_range"))
        if not isinstance(self.depo_warmup_steps, int) or self.depo_warmup_steps < 0:
            fail(f"depo_warmup_steps must be an integer >= 0, got {self.depo_warmup_steps!r}.", "Use 0 for none.")
        every = self.depo_reference_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 0 or every == 1:
            fail(
                f"depo_reference_every must be 0 (off) or an integer >= 2, got {every!r}"
                + (" (every step a reference step would leave no step that filters)." if every == 1 else "."),
                "Use 0 for no reference steps, or e.g. 5 to roll out GRPO's uniform batch every 5th step after "
                "warm-up as a reference for the saving.",
            )
        if not isinstance(self.depo_pass_threshold, (int, float)) or not math.isfinite(self.depo_pass_threshold):
            fail(
                f"depo_pass_threshold must be a finite number, got {self.depo_pass_threshold!r}.",
                "For 0/1 accuracy rewards use 0.5.",
            )
        check_feature_names(self.depo_features)
        stray = [name for name in self.depo_feature_options if name not in self.depo_features]
        if stray:
            fail(
                f"depo_feature_options has options for {stray}, which are not in depo_features {self.depo_features}.",
                "Add those groups to depo_features or drop their options.",
            )
        try:
            check_policy_name(self.depo_selection)
        except ValueError as exc:
            fail(f"depo_selection: {exc}", "Set depo_selection to one of those names.")
        if self.depo_mask_zero_variance and self.loss_type not in MASKABLE_LOSS_TYPES:
            fail(
                f"depo_mask_zero_variance=True has no effect with loss_type={self.loss_type!r}: that loss averages "
                "over sequences (or divides by a constant), so a group left out of the loss mask still counts.",
                f"Use a token-normalised loss_type ({', '.join(MASKABLE_LOSS_TYPES)}; 'dapo' is TRL's default) "
                "or set depo_mask_zero_variance=False.",
            )
        if self.depo_max_rollouts_per_epoch is not None and (
            not isinstance(self.depo_max_rollouts_per_epoch, int) or self.depo_max_rollouts_per_epoch < 1
        ):
            fail(
                f"depo_max_rollouts_per_epoch must be an integer >= 1 or None, got {self.depo_max_rollouts_per_epoch!r}.",
                "Use 1 (each prompt at most once per pass of the candidate walk) or None for no cap.",
            )
        if self.depo_revisit_after is not None and self.depo_revisit_after < 1:
            fail(f"depo_revisit_after must be >= 1 or None, got {self.depo_revisit_after!r}.", "Use e.g. 256.")
        if self.depo_embedding_adapter not in EMBEDDING_ADAPTER:
            fail(
                f"depo_embedding_adapter must be one of {EMBEDDING_ADAPTER}, got {self.depo_embedding_adapter!r}.",
                "'on' embeds with the trained adapter, 'off' with the frozen base model.",
            )
        if self.depo_embedding_refresh_every < 1:
            fail(f"depo_embedding_refresh_every must be >= 1, got {self.depo_embedding_refresh_every}.", "Use 1.")
        if self.depo_warm_start_path is not None and not os.path.exists(self.depo_warm_start_path):
            fail(
                f"depo_warm_start_path {self.depo_warm_start_path!r} does not exist.",
                "Give the path of a JSONL of measured pass rates, or leave it unset.",
            )
        if isinstance(self.depo_estimator, str):
            resolve_estimator_class(self.depo_estimator)
        if self.depo_embedding_pooling not in EMBEDDING_POOLINGS:
            fail(
                f"depo_embedding_pooling must be one of {EMBEDDING_POOLINGS}, got {self.depo_embedding_pooling!r}.",
                "Use 'mean' (the default) or 'last'.",
            )
        for name in ("depo_embedding_dim", "depo_embedding_max_length", "depo_embedding_batch_size"):
            if getattr(self, name) < 1:
                fail(f"{name} must be >= 1, got {getattr(self, name)!r}.", "Use a positive integer.")
        if not self.depo_audit_max_mb > 0:
            fail(f"depo_audit_max_mb must be > 0, got {self.depo_audit_max_mb!r}.", "Use e.g. 64.")
        if self.depo_history_max_prompts < 1:
            fail(f"depo_history_max_prompts must be >= 1, got {self.depo_history_max_prompts}.", "Use e.g. 1000000.")
        if self.depo_console not in ("depo", "trl"):
            fail(f"depo_console={self.depo_console!r}: choose one of ['depo', 'trl'].",
                 "'depo' prints one compact line every few steps, 'trl' TRL's full per-step dicts.")
        if not isinstance(self.depo_console_every, int) or self.depo_console_every < 1:
            fail(f"depo_console_every={self.depo_console_every!r}: print every N >= 1 steps.", "Use e.g. 5.")
