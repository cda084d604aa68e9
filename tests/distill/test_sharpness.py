"""A sharpness-aware (SAM) step of the engine under ZeRO-3 equals SAM computed by hand in plain PyTorch."""

import subprocess

import pytest
import torch
from safetensors.torch import load_file
from zero3_sam_job import LR, ROWS, SEQ_LEN

from distill.launcher import REPO, deepspeed_command, stage_env
from distill.models import build_model
from distill.objective import token_cross_entropy
from unlearn.tasks.arithmetic import PackedArithmeticDataset
from unlearn.tasks.tokenizer import build_char_tokenizer

pytestmark = pytest.mark.slow
RADIUS = 0.5


def engine_step(tmp_path, model_dir, ranks: int, radius: float) -> dict:
    out = tmp_path / f"w-{ranks}-{radius}.safetensors"
    args = [str(model_dir), str(tmp_path / f"run-{ranks}-{radius}"), str(out), str(radius)]
    result = subprocess.run(deepspeed_command("tests/distill/zero3_sam_job.py", args, ranks), env=stage_env(),
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return load_file(out)


def mean_ce(model, rows) -> torch.Tensor:
    ids = torch.stack([r["input_ids"] for r in rows])
    labels = torch.stack([r["labels"] for r in rows])
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    return token_cross_entropy(logits, labels) / (labels.numel() - labels.shape[0])


def by_hand(model, rows, radius: float) -> tuple[dict, dict]:
    """w - lr * grad L(w + radius * g / ||g||), g = grad L(w): SAM with SGD, in one process; and the plain
    SGD step w - lr * g."""
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(mean_ce(model, rows), list(params.values()))
    plain = {n: p.detach() - LR * g for (n, p), g in zip(params.items(), grads)}
    norm = torch.sqrt(sum(g.double().pow(2).sum() for g in grads)).item()
    with torch.no_grad():
        start = {n: p.detach().clone() for n, p in params.items()}
        for p, g in zip(params.values(), grads):
            p.add_(g * (radius / norm))
    grads = torch.autograd.grad(mean_ce(model, rows), list(params.values()))
    return {n: start[n] - LR * g for (n, _), g in zip(params.items(), grads)}, plain


def test_a_sam_step_is_sgd_on_the_gradient_at_the_worst_case_weights(tmp_path):
    tok = build_char_tokenizer()
    torch.manual_seed(0)
    model = build_model("gemma2-tiny", tok)
    model.save_pretrained(tmp_path / "model")
    rows = [PackedArithmeticDataset(tok, ["+", "*"], SEQ_LEN, num_rows=ROWS, seed=0)[i] for i in range(ROWS)]
    expected, plain = by_hand(model, rows, RADIUS)
    for ranks in (1, 2):  # 1: ZeRO-3 keeps small weights in one storage; 2: partitions, the norm all-reduced
        got = engine_step(tmp_path, tmp_path / "model", ranks, RADIUS)
        assert set(expected) <= set(got)
        moved = 0.0
        for name, want in expected.items():
            # fp32 sums in another order (micro-batches, ranks): agreement to ~1e-6 of the weights' scale
            torch.testing.assert_close(got[name], want, rtol=1e-5, atol=2e-6, msg=f"{ranks} ranks: {name}")
            moved = max(moved, (got[name] - plain[name]).abs().max().item())
        assert moved > 1e-3, "the SAM step should differ from a plain SGD step by far more than the tolerance"
