"""depo_trl.vllm_cpu without vLLM: the CPU settings, their environment overrides, and the errors that name a fix.

The real runs (vLLM installed) are in tests/real_vllm/test_vllm.py (``make test-vllm``)."""

import importlib.metadata
import subprocess
import sys
import types

import pytest

from depo_trl import vllm_cpu


def test_defaults_are_the_measured_cpu_setting():
    settings = vllm_cpu.settings_from_env({})
    assert settings.llm_kwargs() == {"dtype": "float32", "enforce_eager": True}
    assert settings.onednn is False and settings.kvcache_gib == "1" and settings.server_weight_sync is True


def test_environment_overrides():
    env = {
        "DEPO_VLLM_DTYPE": "bfloat16",
        "DEPO_VLLM_ENFORCE_EAGER": "0",
        "DEPO_VLLM_ONEDNN": "yes",
        "DEPO_VLLM_SERVER_WEIGHT_SYNC": "off",
        "VLLM_CPU_KVCACHE_SPACE": "4",
    }
    settings = vllm_cpu.settings_from_env(env)
    assert settings.llm_kwargs() == {"dtype": "bfloat16", "enforce_eager": False}
    assert settings.onednn is True and settings.kvcache_gib == "4" and settings.server_weight_sync is False


@pytest.mark.parametrize(
    "env, named",
    [({"DEPO_VLLM_DTYPE": "fp32"}, "DEPO_VLLM_DTYPE='fp32'"), ({"DEPO_VLLM_ONEDNN": "maybe"}, "DEPO_VLLM_ONEDNN")],
)
def test_bad_override_names_the_variable_and_the_values(env, named):
    with pytest.raises(ValueError, match=named) as error:
        vllm_cpu.settings_from_env(env)
    assert "float32" in str(error.value) or "1 or 0" in str(error.value)


def _config(hidden, heads, head_dim=None):
    return types.SimpleNamespace(hidden_size=hidden, num_attention_heads=heads, head_dim=head_dim)


def test_head_size_check_names_the_sizes_and_the_tiny_fix():
    vllm_cpu.check_head_size(_config(128, 4))  # head size 32: supported
    vllm_cpu.check_head_size(_config(576, 9, head_dim=64))  # SmolLM2-135M
    with pytest.raises(ValueError, match=r"head size 8 \(hidden_size 32 / 4 heads\)") as error:
        vllm_cpu.check_head_size(_config(32, 4), "depo-tiny")
    message = str(error.value)
    assert "[32, 64, 80" in message and "hidden_size=128" in message and "use_vllm=False" in message


def test_model_object_must_be_saved_for_colocate(tmp_path):
    vllm_cpu.check_model_on_disk("org/model")  # names pass through to TRL
    vllm_cpu.check_model_on_disk(types.SimpleNamespace(name_or_path=str(tmp_path)))
    vllm_cpu.check_model_on_disk(types.SimpleNamespace(name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct"))
    for path in ("", str(tmp_path / "missing")):
        with pytest.raises(ValueError, match="save_pretrained"):
            vllm_cpu.check_model_on_disk(types.SimpleNamespace(name_or_path=path))


def test_alias_problems():
    assert vllm_cpu.alias_problem(None, None, need_alias=True) is None  # no vllm-cpu: not our business
    assert vllm_cpu.alias_problem("0.32.0", "0.32.0+cpu", need_alias=True) is None
    assert vllm_cpu.alias_problem("0.32.0", None, need_alias=False) is None  # colocate runs without it
    missing = vllm_cpu.alias_problem("0.32.0", None, need_alias=True)
    assert "vllm serve" in missing and vllm_cpu.ALIAS_FIX in missing
    wrong = vllm_cpu.alias_problem("0.32.0", "0.32.0", need_alias=False)
    assert "SIGILL" in wrong and "pip uninstall -y vllm" in wrong and vllm_cpu.ALIAS_FIX in wrong


def test_install_alias_writes_metadata_only(tmp_path, monkeypatch):
    versions = {"vllm-cpu": "0.32.0"}
    monkeypatch.setattr(vllm_cpu, "distribution_version", versions.get)
    folder = vllm_cpu.install_alias(str(tmp_path))
    assert folder.name == "vllm-0.32.0+cpu.dist-info"
    assert sorted(p.name for p in folder.iterdir()) == ["INSTALLER", "METADATA", "RECORD"]
    dist = importlib.metadata.PathDistribution(folder)
    assert dist.metadata["Name"] == "vllm" and dist.version == "0.32.0+cpu"
    assert [str(f) for f in dist.files] == [f"{folder.name}/{n}" for n in ("METADATA", "INSTALLER", "RECORD")]
    versions["vllm"] = "0.32.0"  # a real or wrong 'vllm' distribution is never overwritten
    with pytest.raises(RuntimeError, match="pip uninstall -y vllm"):
        vllm_cpu.install_alias(str(tmp_path))


def test_server_mode_on_cpu_is_refused_before_compute_unless_accepted(monkeypatch):
    from depo_trl import _trl_compat

    args = types.SimpleNamespace(use_vllm=True, vllm_mode="server", use_cpu=True)
    monkeypatch.delenv("DEPO_VLLM_SERVER_WEIGHT_SYNC", raising=False)
    with pytest.raises(ValueError, match="NCCL") as error:
        with vllm_cpu.trl_vllm_settings(args):
            pass
    assert "vllm_mode='colocate'" in str(error.value) and "DEPO_VLLM_SERVER_WEIGHT_SYNC=0" in str(error.value)
    # CUDA, or no use_vllm: the hook does nothing at all
    monkeypatch.setattr(vllm_cpu, "runs_on_cpu", lambda args: False)
    with _trl_compat.vllm_cpu_hook(args):
        pass
    with vllm_cpu.trl_vllm_settings(types.SimpleNamespace(use_vllm=False)):
        pass


def test_colocate_checks_the_model_before_trl_builds_anything():
    args = types.SimpleNamespace(use_vllm=True, vllm_mode="colocate", use_cpu=True)
    with pytest.raises(ValueError, match="save_pretrained"):
        with vllm_cpu.trl_vllm_settings(args, types.SimpleNamespace(name_or_path="")):
            pass


def test_cli_check_and_install_alias_without_vllm_cpu():
    # the default environment has no vllm-cpu: both commands say so and fail, naming the install
    if vllm_cpu.distribution_version("vllm-cpu") is not None:
        pytest.skip("vllm-cpu is installed here: tests/real_vllm/test_vllm.py covers the commands")
    run = [sys.executable, "-m", "depo_trl.vllm_cpu"]
    check = subprocess.run(run + ["check"], capture_output=True, text=True, timeout=120)
    alias = subprocess.run(run + ["install-alias"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 1 and "make install-vllm" in check.stderr
    assert alias.returncode == 1 and "pip install vllm-cpu" in alias.stderr


def test_depo_tiny_by_name_under_use_vllm_is_built_wide_and_saved(tmp_path):
    """model="depo-tiny" with use_vllm (Python and recipes alike): a head size vLLM's CPU attention runs, saved to
    <output_dir>/vllm-model, and the model points at that folder, which is what TRL's colocate vLLM loads."""
    from depo_trl import DEPOConfig
    from depo_trl.tiny import build_tokenizer, load_saved_tokenizer
    from depo_trl.usability import resolve_tiny_model
    from depo_trl.vllm_cpu import CPU_HEAD_SIZES, TINY_VLLM_HIDDEN_SIZE, head_size

    args = DEPOConfig(output_dir=str(tmp_path), use_vllm=True, use_cpu=True, report_to="none")
    model, tokenizer = resolve_tiny_model("depo-tiny", None, args)
    folder = tmp_path / "vllm-model"
    assert model.config.hidden_size == TINY_VLLM_HIDDEN_SIZE and head_size(model.config) in CPU_HEAD_SIZES
    assert model.name_or_path == str(folder) and (folder / "config.json").is_file()
    assert load_saved_tokenizer(str(folder))("ab c\nd")["input_ids"] == build_tokenizer()("ab c\nd")["input_ids"]
    plain, _ = resolve_tiny_model("depo-tiny", None, DEPOConfig(output_dir=str(tmp_path / "plain"), use_cpu=True, report_to="none"))
    assert plain.config.hidden_size != TINY_VLLM_HIDDEN_SIZE and not (tmp_path / "plain" / "vllm-model").exists()
