"""Shrink-and-perturb on ZeRO-3 partitions gives bit-identical weights on 1 and 2 ranks."""

import pytest
import torch
from safetensors.torch import load_file

from distill.launcher import REPO, deepspeed_command, stage_env
from distill.models import build_model
from distill.noise import shrink_and_perturb
from unlearn.tasks.tokenizer import build_char_tokenizer

pytestmark = pytest.mark.slow


def test_perturbation_does_not_depend_on_the_world_size(tmp_path, monkeypatch, block=1000):
    """Blocks of 1000 elements: every large weight spans several noise blocks and rank 1's partition
    starts inside one (with the default block each weight of this model is one block, the case
    test_noise.py checks against the whole-tensor draw)."""
    import subprocess

    from distill import noise

    tok = build_char_tokenizer()
    torch.manual_seed(0)
    teacher = build_model("gemma2-tiny", tok)
    teacher.save_pretrained(tmp_path / "teacher")
    outs = {}
    for n in (1, 2):
        outs[n] = tmp_path / f"perturbed-{n}.safetensors"
        args = [str(tmp_path / "teacher"), str(outs[n]), str(block)]
        cmd = deepspeed_command("tests/distill/zero3_perturb_job.py", args, n)
        result = subprocess.run(cmd, env=stage_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-4000:]
    one, two = load_file(outs[1]), load_file(outs[2])
    monkeypatch.setattr(noise, "BLOCK", block)
    shrink_and_perturb(teacher, alpha=0.6, beta=0.1, seed=11)  # unpartitioned, in this process
    plain = dict(teacher.named_parameters())
    assert set(one) == set(two) == set(plain)
    for name in one:
        assert torch.equal(one[name], two[name]), name
        assert torch.equal(one[name], plain[name].detach()), name
