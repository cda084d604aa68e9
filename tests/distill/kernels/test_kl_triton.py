"""The Triton kernels against the reference, on every stress case.

Without a GPU the kernels run in Triton's interpreter on CPU tensors: TRITON_INTERPRET=1 must be set
before the kernels are defined (at the first import of distill.kernels), so it is set here, above that
import. With CUDA the same tests run the compiled kernels on the GPU.
"""

import os
import subprocess
import sys
import textwrap

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest
import triton
import triton.language as tl

from distill.kernels import kl_triton
from distill.kernels.common import tanh
from distill.launcher import REPO
from distill.losses import fused_linear_kl, reference_kl
from distill.losses.synthetic import CASES

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BLOCK_V = 128  # small, so V = 257, 300, 301, 1000 span several blocks with a ragged last one

# Tolerances, against the float64 reference on the same (already rounded) inputs; the reasoning is that
# of tests/distill/losses/test_kl_chunked.py: float32 accuracy for the loss whatever the input dtype
# (1e-5 per counted token, times T^2), atol 1e-6 of T |grad_output| on the gradient, and for a bf16
# gradient two roundings. One difference: Triton's interpreter converts float32 to bf16 by truncation
# (compiled kernels round to nearest even), so the store can be off by up to 2^-7 relative, and the
# backward's scaling by grad_output rounds once more (2^-8): rtol 2^-7 + 2^-8 under the interpreter.
LOSS_ATOL_PER_TOKEN = 1e-5
GRAD_ATOL = 1e-6
BF16_RTOL = 2.0**-7 + (2.0**-8 if DEVICE == "cpu" else 0.0)
GRAD_RTOL = {torch.float32: 1e-5, torch.bfloat16: BF16_RTOL}


def reference_and_grad(z, target, kind, opts, grad_output):
    z64 = z.double().requires_grad_()
    target64 = target.double() if kind == "dense" else (target[0], target[1].double())
    ref, n = reference_kl(z64, target64, kind=kind, **opts)
    (ref * grad_output).backward()
    return ref.detach(), int(n), z64.grad


def on_device(target):
    return target.to(DEVICE) if isinstance(target, torch.Tensor) else tuple(t.to(DEVICE) for t in target)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["dense", "topk", "sampled"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_triton_matches_the_reference(case, kind, dtype):
    z, target, mask = case.build(kind, dtype)
    opts = dict(temperature=case.temperature, softcap=case.softcap, mask=mask)
    ref, n_ref, ref_grad = reference_and_grad(z, target, kind, opts, case.grad_output)

    zz = z.to(DEVICE).requires_grad_()
    dev_mask = None if mask is None else mask.to(DEVICE)
    loss, n = kl_triton(zz, on_device(target), kind=kind, temperature=case.temperature, softcap=case.softcap,
                        mask=dev_mask, inplace=False, block_v=BLOCK_V)
    (loss * case.grad_output).backward()

    assert int(n) == n_ref and loss.dtype == torch.float32 and zz.grad.dtype == dtype
    torch.testing.assert_close(loss.detach().double().cpu(), ref, rtol=1e-6,
                               atol=LOSS_ATOL_PER_TOKEN * max(n_ref, 1) * case.temperature**2)
    scale = case.temperature * abs(case.grad_output)
    torch.testing.assert_close(zz.grad.double().cpu(), ref_grad, rtol=GRAD_RTOL[dtype], atol=GRAD_ATOL * scale)
    if mask is not None:
        assert not zz.grad[~dev_mask].any(), "rows not counted must get a zero gradient"
    if n_ref > 0:
        assert ref_grad.abs().max() > 1e-3 * scale, "a case with counted rows must have a gradient to compare"


@pytest.mark.parametrize("kind", ["dense", "topk", "sampled"])
def test_default_block_and_inplace_gradient_over_the_logits(kind):
    case = CASES[0]
    z, target, mask = case.build(kind)
    ref, _, ref_grad = reference_and_grad(z, target, kind, dict(mask=mask), 1.0)
    zz = z.to(DEVICE).requires_grad_()
    loss, _ = kl_triton(zz, on_device(target), kind=kind, mask=mask.to(DEVICE))  # inplace by default
    loss.backward()
    torch.testing.assert_close(loss.double().cpu(), ref, rtol=1e-6, atol=LOSS_ATOL_PER_TOKEN * 13)
    torch.testing.assert_close(zz.grad.double().cpu(), ref_grad, rtol=1e-5, atol=GRAD_ATOL)
    assert torch.equal(zz.detach(), zz.grad)  # the logits' storage now holds their gradient


def test_without_grad_the_logits_are_left_untouched_and_the_backward_runs_once():
    z, target, mask = CASES[0].build("topk")
    zz = z.to(DEVICE).requires_grad_()
    with torch.no_grad():
        loss, _ = kl_triton(zz, on_device(target), kind="topk", mask=mask.to(DEVICE), block_v=BLOCK_V)
    assert torch.equal(zz.detach().cpu(), z)
    torch.testing.assert_close(loss.cpu(), reference_kl(z, target, kind="topk", mask=mask)[0])
    loss, _ = kl_triton(zz, on_device(target), kind="topk", mask=mask.to(DEVICE), block_v=BLOCK_V)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="can run once"):
        loss.backward()


def test_row_offsets_beyond_int32_are_computed_in_int64():
    """Row 2 of a (3, V) view with row stride 2^30 + 7 starts past element 2^31: an int32 row offset
    would wrap around (a crash or a wrong row). The 4 GiB bf16 storage is never touched beyond the
    three rows, so it costs no memory. Run apart: a wrong offset may kill the process."""
    script = textwrap.dedent(f"""
        import os, sys
        os.environ.setdefault("TRITON_INTERPRET", "1")
        sys.path.insert(0, {str(REPO)!r})
        import torch
        from distill.kernels import kl_triton
        from distill.losses import reference_kl
        from distill.losses.synthetic import teacher_target
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        v, stride = 300, 2**30 + 7
        small = (3 * torch.randn(3, v, generator=torch.Generator().manual_seed(0))).bfloat16()
        ids, lp = teacher_target(torch.randn(3, v, generator=torch.Generator().manual_seed(1)), "topk", k=4)
        z = torch.empty(2 * stride + v, dtype=torch.bfloat16, device=dev).as_strided((3, v), (stride, 1))
        z.copy_(small)
        z.requires_grad_()
        loss, _ = kl_triton(z, (ids.to(dev), lp.to(dev)), kind="topk", block_v=128)
        loss.backward()
        zs = small.double().requires_grad_()
        ref, _ = reference_kl(zs, (ids, lp.double()), kind="topk")
        ref.backward()
        torch.testing.assert_close(loss.double().cpu(), ref.detach(), rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(z.grad.double().cpu(), zs.grad, rtol={BF16_RTOL}, atol=1e-6)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-3000:])


@pytest.mark.parametrize("kind", ["dense", "topk", "sampled"])
def test_fused_linear_with_the_triton_backend_matches_the_reference(kind):
    case = CASES[2]  # k = 64, peaked teacher, softcap 5, T = 0.7, grad_output 3
    _, target, mask = case.build(kind)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(case.n, 32, generator=g, dtype=torch.float64)
    weight = torch.randn(case.vocab, 32, generator=g, dtype=torch.float64) * 0.5
    opts = dict(kind=kind, temperature=case.temperature, softcap=case.softcap)
    h64, w64 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    ref, _ = reference_kl(h64 @ w64.T, target.double() if kind == "dense" else (target[0], target[1].double()),
                          mask=mask, **opts)
    (ref * case.grad_output).backward()
    h, w = hidden.float().to(DEVICE).requires_grad_(), weight.float().to(DEVICE).requires_grad_()
    loss, _ = fused_linear_kl(h, w, on_device(target), mask=mask.to(DEVICE), chunk_size=4, backend="triton", **opts)
    (loss * case.grad_output).backward()
    torch.testing.assert_close(loss.double().cpu(), ref.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(h.grad.double().cpu(), h64.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w.grad.double().cpu(), w64.grad, rtol=1e-4, atol=1e-5)


def test_teacher_mass_rounding_above_one_clamps_the_tail_to_zero():
    # All V tokens in the set, their stored masses summing to 1 + 1e-4 (rounding in a cache): p_tail = 0.
    g = torch.Generator().manual_seed(3)
    z, t = 3 * torch.randn(4, 300, generator=g), 3 * torch.randn(4, 300, generator=g)
    lp, ids = (torch.log_softmax(t, -1) + 1e-4).topk(300, dim=-1)
    ref, _, ref_grad = reference_and_grad(z, (ids, lp), "topk", {}, 1.0)
    zz = z.to(DEVICE).requires_grad_()
    loss, _ = kl_triton(zz, on_device((ids, lp)), kind="topk", block_v=BLOCK_V)
    loss.backward()
    torch.testing.assert_close(loss.double().cpu(), ref, rtol=1e-6, atol=LOSS_ATOL_PER_TOKEN * 4)
    torch.testing.assert_close(zz.grad.double().cpu(), ref_grad, rtol=1e-5, atol=GRAD_ATOL)


@triton.jit
def _softcap_kernel(x_ptr, y_ptr, n, cap, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    tl.store(y_ptr + offs, cap * tanh(x / cap), mask=offs < n)


def test_softcap_tanh_is_accurate_to_float32_over_the_whole_range():
    # tanh(x) = (1 - e) / (1 + e) alone would lose up to 3e-4 relative near |x| = 1e-4: the series takes over.
    mags = torch.logspace(-6, 3, 500, dtype=torch.float64)
    x = torch.cat([mags, -mags, torch.zeros(1, dtype=torch.float64)])
    y = torch.empty(x.numel(), dtype=torch.float32, device=DEVICE)
    _softcap_kernel[(1,)](x.float().to(DEVICE), y, x.numel(), 30.0, BLOCK=1024)
    exact = 30.0 * torch.tanh(x.float().double() / 30.0)
    torch.testing.assert_close(y.double().cpu(), exact, rtol=1e-6, atol=0.0)
