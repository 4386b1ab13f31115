"""Several processes (torchrun, gloo, CPU): every rank decides the same, rewards reach the right prompt."""

import json
import os
import shutil
import subprocess
import sys

import pytest

WORKER = os.path.join(os.path.dirname(__file__), "mp_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository


def _run(nproc, per_device_batch, backend, tmp_path, features="default"):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    cmd = [torchrun, "--nproc_per_node", str(nproc), "--master_port", str(29500 + os.getpid() % 1000), WORKER,
           str(tmp_path), str(per_device_batch), backend, features]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun with {nproc} processes timed out after 300 s:\n{exc.stdout}\n{exc.stderr}")
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(nproc)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "nproc, per_device_batch, backend, features",
    [(2, 6, "transformers", "default"), (3, 4, "transformers", "default"), (2, 6, "vllm-server-standin", "default"),
     (3, 4, "transformers", "answer")],
)
def test_ranks_agree_and_rewards_reach_the_right_prompt(nproc, per_device_batch, backend, features, tmp_path):
    """2 ranks x 6 rows = 3 groups of 4, group 1 straddling ranks 0 and 1; 3 ranks x 4 rows = 3 groups of 4 with
    a 1 + 3 split. The vLLM stand-in checks the server path's contract (G contiguous copies, rows per rank)."""
    reports = _run(nproc, per_device_batch, backend, tmp_path, features)
    first = reports[0]
    assert first["world_size"] == nproc
    for other in reports[1:]:
        assert other["rounds"] == first["rounds"] == 5
        assert other["selected"] == first["selected"]  # identical selection on every rank
        assert other["estimator"] == first["estimator"]  # identical estimator state
    # Each rank's reward function sees its own rows; concatenated in rank order they must be G contiguous
    # copies of each selected prompt, in the selected order.
    for round_index, keys in enumerate(first["selected"]):
        window = slice(per_device_batch * round_index, per_device_batch * (round_index + 1))
        rows = [key for report in reports for key in report["reward_rows"][window]]
        assert rows == [k for k in keys for _ in range(4)], f"round {round_index}: rows are not G contiguous copies"
    # Rewards were attributed to the right prompt: easy prompts were observed at exactly 1, hard at 0.
    seen = 0
    for kind, was_seen, rate in zip(first["kinds"], first["history_seen"], first["history_last_rate"]):
        if was_seen:
            seen += 1
            assert rate == (1.0 if kind == "easy" else 0.0)
    assert seen >= 10
    if backend == "vllm-server-standin":
        for report in reports:
            calls = report["generation_calls"]
            assert len(calls) == 5
            assert all(c == {"local_rows": per_device_batch, "global_rows": per_device_batch * nproc,
                             "groups": per_device_batch * nproc // 4} for c in calls)
