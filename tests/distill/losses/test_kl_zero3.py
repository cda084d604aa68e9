"""ZeRO-3 on 2 ranks: the fused-linear loss's gradients reach the partitions of a tied output matrix and
equal the unsharded reference's (the script: tests/distill/losses/zero3_fused_linear_kl.py)."""

import json
import subprocess

import pytest
import torch

from distill.launcher import REPO, deepspeed_command, stage_env

pytestmark = pytest.mark.slow


def test_zero3_two_ranks_fused_linear_loss_and_gradients_equal_the_unsharded_reference(tmp_path):
    out = tmp_path / "result.json"
    env = stage_env()
    if torch.cuda.device_count() < 2:
        env["DS_ACCELERATOR"] = "cpu"  # two CPU ranks wherever two GPUs are not at hand
    cmd = deepspeed_command("tests/distill/losses/zero3_fused_linear_kl.py", ["--out", str(out)], 2)
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["tied"]
    assert result["partitioned"], "the output matrix must be a partition on each rank, or the test shows nothing"
    assert result["direct_call_on_partition_refused"]
    for kind in ("dense", "topk", "sampled"):
        r = result[kind]
        assert r["count"] == r["ref_count"] > 0
        assert r["loss_sum"] == pytest.approx(r["ref_loss_sum"], rel=1e-6, abs=1e-5)
        grads = r["grads"]
        assert set(grads) == {"embed.weight", "proj.weight", "proj.bias"}
        assert grads["embed.weight"]["shape"] == [97, 16]
        # float32 on both sides, summed over 2 ranks in another order: agreement to float32 rounding
        for name, g in grads.items():
            assert g["max_abs"] > 1e-3, (kind, name)
            assert g["max_abs_err"] <= 1e-6 * max(1.0, g["max_abs"]), (kind, name, g)
        # the output matrix's own share of the tied gradient is large: had it not reached ZeRO's
        # partitions, the embedding's gradient would be off by that much
        assert r["head_part_of_tied_grad_max_abs"] > 1e3 * grads["embed.weight"]["max_abs_err"]
