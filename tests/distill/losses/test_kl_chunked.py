"""The chunked PyTorch path (what CPU training runs) against the reference, on every stress case."""

import pytest
import torch

from distill.losses import kl_loss, reference_kl
from distill.losses.chunked import kl_chunked
from distill.losses.dispatch import resolve_backend
from distill.losses.synthetic import CASES

# Tolerances, against the float64 reference evaluated on the same (already rounded) inputs.
# Loss: fp32 and bf16 inputs are both computed in float32 (bf16 values are exact in float32), so both
# get float32 accuracy: each token's terms carry the rounding of log-probabilities of magnitude up to
# ~60 here (60 * 2^-24 ~ 4e-6) plus a few ulps from sums over V; 1e-5 per counted token, times T^2.
# Gradient: a probability exp((s - m) - log d) carries a few float32 ulps of relative error (the
# difference from the row maximum m is exact for the tokens that carry the mass) and |q - p| <= 1, so
# atol 1e-6 of the scale T |grad_output| (observed: up to 1.2e-7). A bf16 gradient is then
# rounded twice, when stored over the bf16 logits and when the backward scales it by grad_output,
# each within 2^-8 relative (bf16 keeps 8 significant bits): rtol 2^-7.
LOSS_ATOL_PER_TOKEN = 1e-5
GRAD_ATOL = 1e-6
GRAD_RTOL = {torch.float32: 1e-5, torch.bfloat16: 2.0**-7}


def check_against_reference(loss_fn, case, kind, dtype, grad_rtol):
    """Run loss_fn(student_logits, target, kind=..., ...) on the case and compare with the reference."""
    z, target, mask = case.build(kind, dtype)
    opts = dict(kind=kind, temperature=case.temperature, softcap=case.softcap, mask=mask)
    z64 = z.double().requires_grad_()
    target64 = target.double() if kind == "dense" else (target[0], target[1].double())
    ref, n_ref = reference_kl(z64, target64, **opts)
    (ref * case.grad_output).backward()

    zz = z.clone().requires_grad_()
    loss, n = loss_fn(zz, target, **opts)
    (loss * case.grad_output).backward()

    assert int(n) == int(n_ref) and loss.dtype == torch.float32 and zz.grad.dtype == dtype
    t2 = case.temperature**2
    torch.testing.assert_close(loss.detach().double(), ref.detach(), rtol=1e-6,
                               atol=LOSS_ATOL_PER_TOKEN * max(int(n), 1) * t2)
    scale = case.temperature * abs(case.grad_output)
    torch.testing.assert_close(zz.grad.double(), z64.grad, rtol=grad_rtol, atol=GRAD_ATOL * scale)
    if mask is not None:
        assert not zz.grad[~mask].any(), "rows not counted must get a zero gradient"
    if int(n) > 0:
        assert z64.grad.abs().max() > 1e-3 * scale, "a case with counted rows must have a gradient to compare"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["dense", "topk", "sampled"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_chunked_matches_the_reference(case, kind, dtype):
    def fn(z, target, **opts):  # chunks of 4 rows: uneven last chunks for the odd row counts
        return kl_chunked(z, target, chunk_size=4, inplace=False, **opts)

    check_against_reference(fn, case, kind, dtype, GRAD_RTOL[dtype])


def test_inplace_writes_the_gradient_over_the_logits_and_not_inplace_keeps_them():
    z, target, mask = CASES[0].build("topk")
    kept = z.clone().requires_grad_()
    loss, _ = kl_chunked(kept, target, kind="topk", mask=mask, inplace=False)
    loss.backward()
    assert torch.equal(kept.detach(), z)
    over = z.clone().requires_grad_()
    kl_chunked(over, target, kind="topk", mask=mask)[0].backward()
    assert torch.equal(over.detach(), kept.grad)  # the logits' storage now holds their gradient


def test_without_grad_the_logits_are_left_untouched():
    z, target, mask = CASES[0].build("dense")
    zz = z.clone().requires_grad_()
    with torch.no_grad():
        loss, _ = kl_chunked(zz, target, kind="dense", mask=mask)
    assert torch.equal(zz.detach(), z)
    torch.testing.assert_close(loss, reference_kl(z, target, kind="dense", mask=mask)[0])


def test_the_backward_runs_once():
    z, target, _ = CASES[1].build("sampled")
    loss, _ = kl_chunked(z.clone().requires_grad_(), target, kind="sampled")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="can run once"):
        loss.backward()


@pytest.mark.parametrize("chunk_size", [1, 5, 100])
def test_chunk_size_and_strided_logits_do_not_change_the_result(chunk_size):
    z, target, mask = CASES[0].build("topk")
    strided = z.t().contiguous().t().requires_grad_()  # (N, V) with stride(1) == N: chunks are copies
    loss, _ = kl_chunked(strided, target, kind="topk", mask=mask, chunk_size=chunk_size)
    loss.backward()
    zz = z.clone().requires_grad_()
    expected, _ = reference_kl(zz, target, kind="topk", mask=mask)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(strided.grad, zz.grad, rtol=1e-5, atol=1e-6)


def test_dispatch_picks_the_chunked_path_on_cpu():
    assert resolve_backend(None, torch.device("cpu")) == "torch"
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda", torch.device("cpu"))
    z, target, mask = CASES[0].build("sampled")
    loss, n = kl_loss(z, target, kind="sampled", mask=mask)
    torch.testing.assert_close(loss, reference_kl(z, target, kind="sampled", mask=mask)[0])


def test_teacher_mass_rounding_above_one_clamps_the_tail_to_zero():
    # All V tokens in the set, their stored masses summing to 1 + 1e-4 (rounding in a cache): p_tail = 0.
    g = torch.Generator().manual_seed(3)
    z, t = 3 * torch.randn(4, 300, generator=g), 3 * torch.randn(4, 300, generator=g)
    lp, ids = (torch.log_softmax(t, -1) + 1e-4).topk(300, dim=-1)
    z64 = z.double().requires_grad_()
    ref, _ = reference_kl(z64, (ids, lp.double()), kind="topk")
    ref.backward()
    zz = z.clone().requires_grad_()
    loss, _ = kl_chunked(zz, (ids, lp), kind="topk", chunk_size=3)
    loss.backward()
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-6, atol=LOSS_ATOL_PER_TOKEN * 4)
    torch.testing.assert_close(zz.grad.double(), z64.grad, rtol=1e-5, atol=GRAD_ATOL)
