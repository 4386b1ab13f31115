"""DeepSpeed ZeRO-2 and ZeRO-3 on CPU: 2 processes over gloo, launched with the shipped accelerate configs.

ZeRO-3 runs with ``stage3_param_persistence_threshold: 0`` so every parameter is really split between the ranks (the
test checks each rank's partition sizes). DEPO filters with the ``embedding`` and ``answer_likelihood`` features, so
the policy prefill is a collective through the sharded model; the candidate count (9) does not divide by the world
size (2). Each test checks identical selections and estimator state on every rank, a checkpoint with DEPO's state,
and a resume from it that picks what the uninterrupted run picked. The ZeRO-3 run saves without consolidated weights
(no ``model.safetensors``), and ``route`` must predict from its shards what the trainer predicted.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "multiprocess" / "ds_worker.py"
CONFIGS = ROOT / "recipes" / "accelerate_configs"
TINY = ROOT / "recipes" / "tiny" / "depo" / "config_letters.yaml"
TIMEOUT = 300


def _accelerate() -> str:
    return shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable), "accelerate")


def _env() -> dict:
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        pytest.fail("DeepSpeed is not installed: DS_BUILD_OPS=0 pip install 'depo_trl[deepspeed]' (make install does)")
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_DISABLED": "true"}


def _launch(config: str, *args, port_offset: int = 0, expect_ok: bool = True) -> subprocess.CompletedProcess:
    cmd = [_accelerate(), "launch", "--config_file", str(CONFIGS / config),
           "--main_process_port", str(29600 + (os.getpid() + port_offset) % 300), *map(str, args)]
    try:
        proc = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(cmd)} timed out after {TIMEOUT} s:\n{exc.stdout}\n{exc.stderr}")
    if expect_ok:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _run_worker(config: str, out: Path, resume: Path | None = None, *flags, port_offset: int = 0) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    _launch(config, WORKER, out, 6, 3, resume or "-", *flags, port_offset=port_offset)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def _check_ranks_agree_and_filter(reports: list[dict], stage: int, first_round: int = 0) -> None:
    first = reports[0]
    assert first["world_size"] == 2 and first["zero_stage"] == stage and "DEEPSPEED" in first["distributed_type"]
    assert first["stats_rounds"] == 6
    assert [r["round"] for r in first["rounds"]] == list(range(first_round, 6))
    for other in reports[1:]:
        assert other["rounds"] == first["rounds"]  # identical candidates and selection on every rank
        assert other["estimator"] == first["estimator"]  # identical estimator state
        assert other["prefill"] == first["prefill"]  # the same number of prefill forwards (a collective)
    filtered = [r for r in first["rounds"] if r["round"] >= 2]  # after depo_warmup_steps=2
    assert filtered and all(len(r["candidates"]) == 9 and len(r["selected"]) == 3 for r in filtered)
    assert all(set(r["selected"]) <= set(r["candidates"]) for r in filtered)
    # 9 candidates over 2 ranks: 5 each (one padded repeat), in forwards of 2 -> 3 forwards on every rank.
    assert [p["forwards"] for p in first["prefill"] if p["candidates"] == 9] == [3] * len(filtered)


def _check_checkpoint(folder: Path, stage: int) -> None:
    assert (folder / "depo_state.json").is_file() and (folder / "depo_state.npz").is_file()
    state = json.loads((folder / "depo_state.json").read_text())
    assert "estimator" in json.dumps(state)
    shards = {p.name for p in (folder / "global_step3").iterdir()}
    # One optimizer shard per rank; ZeRO-3 also splits the model states per rank, ZeRO-2 saves them once.
    assert {f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)} <= shards
    model_states = ({f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in (0, 1)} if stage == 3
                    else {"mp_rank_00_model_states.pt"})
    assert model_states <= shards, shards
    assert (folder / "zero_to_fp32.py").is_file()
    assert (folder / "rng_state_0.pth").is_file() and (folder / "rng_state_1.pth").is_file()


def _check_resume(uninterrupted: list[dict], resumed: list[dict]) -> None:
    later = [r for r in uninterrupted[0]["rounds"] if r["round"] >= 3]
    assert [r["round"] for r in resumed[0]["rounds"]] == [3, 4, 5]
    assert resumed[0]["rounds"] == later  # same candidates and selections as the run that never stopped
    assert resumed[0]["estimator"] == uninterrupted[0]["estimator"]
    assert resumed[0]["history_seen"] == uninterrupted[0]["history_seen"]


@pytest.mark.slow
def test_zero3_shards_every_parameter_filters_saves_resumes_and_routes(tmp_path):
    full = _run_worker("zero3_cpu.yaml", tmp_path / "full", None, "--no-16bit")
    _check_ranks_agree_and_filter(full, stage=3)
    for report in full:
        # Every parameter is split: each rank's partitions add up to half the model (plus alignment padding), no
        # parameter is whole on any rank, and outside a forward the parameters hold no local data at all; so at the
        # start of every prefill (6 rounds + the held-out scoring) and after training.
        snapshots = [report["sharding"], *report["sharding_at_prefill"]]
        assert len(snapshots) == 1 + 6 + 1
        for shard in snapshots:
            assert shard["full_numel"] == 21920 and shard["n_params"] == 26
            half = shard["full_numel"] / 2
            assert half <= shard["partition_numel"] <= half + 2 * shard["n_params"]
            assert shard["params_fully_local"] == 0 and shard["param_numel_local"] == 0

    checkpoint = tmp_path / "full" / "run" / "checkpoint-3"
    _check_checkpoint(checkpoint, stage=3)
    assert not (checkpoint / "model.safetensors").exists()  # zero3 16-bit save off: only the shards

    resumed = _run_worker("zero3_cpu.yaml", tmp_path / "resumed", checkpoint, "--no-16bit", port_offset=1)
    _check_ranks_agree_and_filter(resumed, stage=3, first_round=3)
    _check_resume(full, resumed)

    # route on the final ZeRO-3 folder (shards only) consolidates them and predicts what the trainer predicted.
    from depo_trl.route import route
    from depo_trl.zero_checkpoint import is_zero_checkpoint

    run_dir = tmp_path / "full" / "run"
    assert is_zero_checkpoint(str(run_dir)) and not (run_dir / "model.safetensors").exists()
    # No tokenizer= : the one the run saved reloads as trained (depo_trl.tiny.load_saved_tokenizer).
    routed = route(str(run_dir), full[0]["held_out"], tau=0.3)
    np.testing.assert_allclose(routed.predicted, full[0]["held_out_predicted"], atol=1e-6)
    # A mid-run checkpoint routes too (its own shards and DEPO state), with the run's depo_run.json.
    config = json.loads((run_dir / "depo_run.json").read_text())
    mid = route(str(checkpoint), full[0]["held_out"], tau=0.3, config=config)
    assert mid.state_dir == str(checkpoint) and np.isfinite(mid.predicted).all()
    assert not np.allclose(mid.predicted, routed.predicted)  # a different estimator state and policy


@pytest.mark.slow
def test_zero2_shards_the_optimizer_filters_saves_and_resumes(tmp_path):
    full = _run_worker("zero2_cpu.yaml", tmp_path / "full", port_offset=2)
    _check_ranks_agree_and_filter(full, stage=2)
    for report in full:
        shard = report["sharding"]
        # ZeRO-2: every rank holds the whole model but only its half of the fp32 optimizer partition.
        assert shard["param_numel_local"] == shard["full_numel"] == 21920
        assert shard["full_numel"] / 2 <= shard["partition_numel"] <= shard["full_numel"] / 2 + 64
    _check_checkpoint(tmp_path / "full" / "run" / "checkpoint-3", stage=2)
    resumed = _run_worker("zero2_cpu.yaml", tmp_path / "resumed", tmp_path / "full" / "run" / "checkpoint-3",
                          port_offset=3)
    _check_ranks_agree_and_filter(resumed, stage=2, first_round=3)
    _check_resume(full, resumed)


@pytest.mark.slow
def test_gpu_zero3_config_with_a_cpu_recipe_fails_before_training_naming_both_settings(tmp_path):
    """The shipped zero3.yaml (mixed_precision: bf16) with the tiny CPU recipe (bf16: false)."""
    proc = _launch("zero3.yaml", "--num_processes", "1", "-m", "depo_trl.scripts.depo", "--config", TINY,
                   "--output_dir", tmp_path / "out", port_offset=4, expect_ok=False)
    assert proc.returncode != 0
    err = proc.stderr
    assert "DeepSpeed precision disagrees with the recipe" in err, err[-3000:]
    assert "mixed_precision: bf16" in err and "bf16=False" in err and "zero3_cpu.yaml" in err
    assert "ds bf16.enabled=True vs hf" not in err  # transformers' late message never reached
    assert not (tmp_path / "out").exists()  # nothing trained or saved


# ---------------------------------------------------------------------------------------------- in-process checks
@pytest.fixture
def clean_deepspeed_state():
    yield
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()  # DeepSpeed configs register globally (ZeRO-3 init of later models)


def _config(tmp_path, **kw):
    from depo_trl import DEPOConfig

    return DEPOConfig(output_dir=str(tmp_path / "o"), use_cpu=True, report_to="none", **kw)


@pytest.mark.parametrize("recipe_bf16", [False, True])
def test_precision_mismatch_in_accelerate_env_is_named_with_the_fix(tmp_path, monkeypatch, clean_deepspeed_state,
                                                                    recipe_bf16):
    # What `accelerate launch` with a DeepSpeed accelerate config sets in the environment.
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    if recipe_bf16:  # agreeing settings pass
        assert _config(tmp_path, bf16=True).deepspeed_plugin.deepspeed_config["bf16"]["enabled"] is True
        return
    with pytest.raises(ValueError, match="DeepSpeed precision disagrees") as info:
        _config(tmp_path, bf16=False)
    message = str(info.value)
    assert "`mixed_precision: bf16`" in message and "bf16.enabled=True" in message and "bf16=False" in message
    assert "zero3_cpu.yaml" in message and "--mixed_precision no" in message and "`bf16: true`" in message


def test_precision_mismatch_in_a_deepspeed_dict_and_auto_follows_the_recipe(tmp_path, clean_deepspeed_state):
    ds = {"zero_optimization": {"stage": 2}, "fp16": {"enabled": True}, "train_micro_batch_size_per_gpu": "auto"}
    with pytest.raises(ValueError, match=r"fp16\.enabled=True, but the recipe \(DEPOConfig\) has fp16=False"):
        _config(tmp_path, bf16=False, deepspeed=ds)
    ds_false = {"zero_optimization": {"stage": 2}, "bf16": {"enabled": False}}
    with pytest.raises(ValueError, match=r"bf16\.enabled=False, but the recipe \(DEPOConfig\) has bf16=True"):
        _config(tmp_path, bf16=True, deepspeed=ds_false)
    # The shipped CPU JSON says "auto": it follows the recipe.
    args = _config(tmp_path, bf16=False, deepspeed=str(CONFIGS / "ds_zero3_cpu.json"))
    assert args.hf_deepspeed_config.config["zero_optimization"]["stage3_param_persistence_threshold"] == 0


def test_zero_checkpoint_without_deepspeed_says_how_to_consolidate(tmp_path, monkeypatch):
    from depo_trl.zero_checkpoint import is_zero_checkpoint, load_causal_lm

    folder = tmp_path / "checkpoint-3"
    (folder / "global_step3").mkdir(parents=True)
    (folder / "latest").write_text("global_step3")
    (folder / "config.json").write_text("{}")
    assert is_zero_checkpoint(str(folder))
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # import deepspeed -> ImportError
    monkeypatch.setitem(sys.modules, "deepspeed.utils", None)
    monkeypatch.setitem(sys.modules, "deepspeed.utils.zero_to_fp32", None)
    with pytest.raises(ImportError, match="zero_to_fp32.py") as info:
        load_causal_lm(str(folder))
    assert "--safe_serialization" in str(info.value) and "model=" in str(info.value)
    (folder / "model.safetensors").write_text("")
    assert not is_zero_checkpoint(str(folder))  # consolidated weights present: loaded by from_pretrained
