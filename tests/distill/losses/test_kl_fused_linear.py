"""The fused-linear loss (hidden states x output matrix, chunked over tokens) against the reference on
materialised logits: values, gradients of both inputs, chunking, the module wrapper, and memory."""

import json
import subprocess
import sys

import pytest
import torch

import distill.losses.fused_linear as fused_linear_module
from distill.launcher import REPO
from distill.losses import FusedLinearKL, fused_linear_kl, reference_kl
from distill.losses.synthetic import CASES

H = 32

# Tolerances, against the float64 reference on the same (already rounded) hidden states and weights.
# The loss has float32 accuracy whatever the input dtype (bf16 inputs are upcast on CPU): 1e-5 per
# counted token, times T^2, as for the chunked path. A gradient entry of hidden or weight is a float32
# sum of products g * w or g * h, with sum_v |g| <= 2 T |grad_output| per row and |w|, |h| of order 1,
# after a logits matmul over H terms: a few float32 ulps of T |grad_output| (observed: up to 2e-6 of
# it), so atol 1e-5 of the scale. bf16 inputs: the float32 gradient, scaled by grad_output in float32,
# is rounded once to bf16 (2^-8 relative).
LOSS_ATOL_PER_TOKEN = 1e-5
GRAD_ATOL = 1e-5
GRAD_RTOL = {torch.float32: 1e-5, torch.bfloat16: 2.0**-8}


def inputs(case, dtype):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(case.n, H, generator=g, dtype=torch.float64).to(dtype)
    weight = (3 * torch.randn(case.vocab, H, generator=g, dtype=torch.float64) / H**0.5).to(dtype)  # logits ~ 3
    return hidden, weight


def reference(hidden, weight, target, kind, opts, grad_output):
    h64, w64 = hidden.double().requires_grad_(), weight.double().requires_grad_()
    target64 = target.double() if kind == "dense" else (target[0], target[1].double())
    ref, n = reference_kl(h64 @ w64.T, target64, kind=kind, **opts)
    (ref * grad_output).backward()
    return ref.detach(), int(n), h64.grad, w64.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["dense", "topk", "sampled"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fused_linear_matches_the_reference_on_materialised_logits(case, kind, dtype):
    _, target, mask = case.build(kind, dtype)
    hidden, weight = inputs(case, dtype)
    opts = dict(temperature=case.temperature, softcap=case.softcap, mask=mask)
    ref, n_ref, ref_gh, ref_gw = reference(hidden, weight, target, kind, opts, case.grad_output)

    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss, n = fused_linear_kl(h, w, target, kind=kind, chunk_size=4, **opts)
    (loss * case.grad_output).backward()

    assert int(n) == n_ref and loss.dtype == torch.float32 and h.grad.dtype == w.grad.dtype == dtype
    torch.testing.assert_close(loss.detach().double(), ref, rtol=1e-6,
                               atol=LOSS_ATOL_PER_TOKEN * max(n_ref, 1) * case.temperature**2)
    scale = case.temperature * abs(case.grad_output)
    torch.testing.assert_close(h.grad.double(), ref_gh, rtol=GRAD_RTOL[dtype], atol=GRAD_ATOL * scale)
    torch.testing.assert_close(w.grad.double(), ref_gw, rtol=GRAD_RTOL[dtype], atol=GRAD_ATOL * scale)
    if n_ref > 0:
        assert ref_gw.abs().max() > 1e-3 * scale and ref_gh.abs().max() > 1e-3 * scale
    if mask is not None:
        assert not h.grad[~mask].any(), "rows not counted must get a zero gradient"


def test_the_loss_sees_chunks_of_at_most_chunk_size_rows(monkeypatch):
    seen = []
    real = fused_linear_module.loss_and_grad_

    def spy(z, target, mask, **kw):
        seen.append((z.shape[0], target.values.shape[0], None if mask is None else mask.shape[0]))
        return real(z, target, mask, **kw)

    monkeypatch.setattr(fused_linear_module, "loss_and_grad_", spy)
    case = CASES[0]  # 13 rows
    _, target, mask = case.build("topk")
    hidden, weight = inputs(case, torch.float32)
    fused_linear_kl(hidden.requires_grad_(), weight, target, kind="topk", mask=mask, chunk_size=5)[0].backward()
    assert seen == [(5, 5, 5), (5, 5, 5), (3, 3, 3)]


def test_the_module_owns_a_tied_weight_and_its_gradient_adds_to_the_embedding_one():
    case = CASES[0]
    _, target, mask = case.build("sampled")
    torch.manual_seed(0)
    embed = torch.nn.Embedding(case.vocab, H)
    head = FusedLinearKL(embed.weight, kind="sampled", temperature=1.5, softcap=10.0, chunk_size=3)
    assert head.weight is embed.weight and "vocab=301" in repr(head)
    tokens = torch.randint(0, case.vocab, (case.n,))
    loss, _ = head(torch.tanh(embed(tokens)), target, mask)
    loss.backward()

    w = embed.weight.detach().clone().requires_grad_()
    ref, _ = reference_kl(torch.tanh(w[tokens]) @ w.T, target, kind="sampled", temperature=1.5, softcap=10.0,
                          mask=mask)
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(embed.weight.grad, w.grad, rtol=1e-5, atol=1e-5)


def test_without_grad_nothing_is_accumulated_and_frozen_inputs_get_none():
    case = CASES[2]
    _, target, mask = case.build("dense")
    hidden, weight = inputs(case, torch.float32)
    ref = reference_kl(hidden @ weight.T, target, kind="dense", temperature=case.temperature,
                       softcap=case.softcap, mask=mask)[0]
    with torch.no_grad():
        loss, _ = fused_linear_kl(hidden, weight.requires_grad_(), target, kind="dense", mask=mask,
                                  temperature=case.temperature, softcap=case.softcap)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-4)
    weight.requires_grad_(False)
    h = hidden.clone().requires_grad_()
    loss, _ = fused_linear_kl(h, weight, target, kind="dense", mask=mask, temperature=case.temperature,
                              softcap=case.softcap)
    loss.backward()
    assert weight.grad is None and h.grad is not None


def test_a_zero3_partition_or_mismatched_inputs_are_refused_by_name():
    target = (torch.zeros(2, 3, dtype=torch.int64), torch.full((2, 3), -2.0))
    with pytest.raises(ValueError, match="ZeRO-3 partition"):
        fused_linear_kl(torch.zeros(2, 4), torch.empty(0), target, kind="topk")
    with pytest.raises(ValueError, match=r"hidden must be a float tensor \(N, H\) with H = 5"):
        fused_linear_kl(torch.zeros(2, 4), torch.zeros(10, 5), target, kind="topk")
    with pytest.raises(ValueError, match="chunk_size must be a positive"):
        fused_linear_kl(torch.zeros(2, 4), torch.zeros(10, 4), target, kind="topk", chunk_size=0)


def test_the_backward_runs_once():
    case = CASES[0]
    _, target, mask = case.build("topk")
    hidden, weight = inputs(case, torch.float32)
    loss, _ = fused_linear_kl(hidden.requires_grad_(), weight, target, kind="topk", mask=mask)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="can run once"):
        loss.backward()


@pytest.mark.slow
def test_peak_memory_is_bounded_by_the_chunk_not_by_n_times_v():
    """bench/kl_loss.py at a small shape: N x V float32 logits are 250 MiB, a 64-row chunk 7.8 MiB. The
    plain path holds several N x V buffers; the fused one must stay far below one of them."""
    cmd = [sys.executable, str(REPO / "bench/kl_loss.py"), "--n", "2048", "--vocab", "32000", "--hidden", "64",
           "--chunk-size", "64", "--skip-gpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    n_by_v = 2048 * 32000 * 4 / 2**30
    assert result["cpu_plain_peak_gib"] > 2 * n_by_v
    assert result["cpu_fused_peak_gib"] < n_by_v / 8
    assert result["cpu_peak_mem_ratio"] >= 10


@pytest.mark.parametrize("kind", ["dense", "topk", "sampled"])
def test_row_scales_weight_each_rows_loss_and_gradient(kind):
    """scale (N,), of either sign, equals the reference's per-row losses weighted by it."""
    case = CASES[2]
    _, target, mask = case.build(kind)
    hidden, weight = inputs(case, torch.float32)
    scale = torch.linspace(-2.0, 3.0, case.n)
    opts = dict(temperature=case.temperature, softcap=case.softcap)
    h64, w64 = hidden.double().requires_grad_(), weight.double().requires_grad_()
    target64 = target.double() if kind == "dense" else (target[0], target[1].double())
    per_row = torch.stack([reference_kl((h64 @ w64.T)[i:i + 1], target64[i:i + 1] if kind == "dense" else
                                        (target64[0][i:i + 1], target64[1][i:i + 1]), kind=kind,
                                        mask=None if mask is None else mask[i:i + 1], **opts)[0]
                           for i in range(case.n)])
    (per_row * scale.double()).sum().backward()

    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss, _ = fused_linear_kl(h, w, target, kind=kind, mask=mask, chunk_size=4, scale=scale, **opts)
    loss.backward()
    torch.testing.assert_close(loss.double(), (per_row * scale.double()).sum().detach(), rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(h.grad.double(), h64.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        rows, n = fused_linear_kl(hidden, weight, target, kind=kind, mask=mask, reduction="none", **opts)
    assert rows.shape == (case.n,)
    torch.testing.assert_close(rows.double(), per_row.detach(), rtol=1e-6, atol=1e-4)
    with pytest.raises(ValueError, match="without gradients"):
        fused_linear_kl(hidden.requires_grad_(), weight, target, kind=kind, mask=mask, reduction="none", **opts)


def test_projected_teacher_logits_equal_the_materialised_ones():
    """A dense target given as a frozen model's hidden states and output matrix (computed chunk by chunk)
    gives the loss and gradients of the same teacher logits passed whole."""
    from distill.losses.targets import ProjectedLogits

    case = CASES[2]
    hidden, weight = inputs(case, torch.float32)
    g = torch.Generator().manual_seed(1)
    t_hidden, t_weight = torch.randn(case.n, 8, generator=g), torch.randn(case.vocab, 8, generator=g)
    teacher = torch.tanh(t_hidden @ t_weight.T / 5.0) * 5.0
    results = []
    for target in (teacher, ProjectedLogits(t_hidden, t_weight, softcap=5.0)):
        h = hidden.clone().requires_grad_()
        loss, _ = fused_linear_kl(h, weight, target, kind="dense", chunk_size=4)
        loss.backward()
        results.append((loss.detach(), h.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="projected teacher logits need"):
        fused_linear_kl(hidden, weight, ProjectedLogits(t_hidden, t_weight[:5]), kind="dense")
