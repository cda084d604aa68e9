"""Triton KL losses: host dispatch over target kinds -> torch.autograd.Function -> functional API.

The kernels (``kl_dense``, ``kl_topk``, ``kl_sampled``) compute each row's loss and, in the same launch,
write d(loss)/d(logits) over the logits buffer. The autograd Function saves that buffer and scales it
by grad_output in the backward, so a training step holds one (N, V) buffer, not a second one for the
gradient. Math and conventions: ``distill.losses.reference``.
"""

from __future__ import annotations

import torch

from distill.kernels.kl_dense import kl_dense_
from distill.kernels.kl_sampled import kl_sampled_
from distill.kernels.kl_topk import kl_topk_
from distill.losses.chunked import scale_grad_
from distill.losses.targets import Target, check_options, count, make_target


def kl_forward_(z: torch.Tensor, target: Target, mask: torch.Tensor | None, *, temperature: float,
                softcap: float | None, compute_grad: bool, block_v: int | None = None) -> torch.Tensor:
    """Per-row loss (N,) float32 of logits z (N, V) (rows contiguous, any float dtype); with
    compute_grad, z holds d(loss_row)/dz on return (rows not counted: 0), else it is left as it was."""
    if z.stride(1) != 1:
        raise ValueError("the Triton KL kernels need logits with contiguous rows (stride(1) == 1)")
    opts = dict(temperature=temperature, softcap=softcap, compute_grad=compute_grad, block_v=block_v)
    if target.kind == "dense":
        return kl_dense_(z, target.values, mask, **opts)
    if target.kind == "topk":
        return kl_topk_(z, target.ids, target.values, mask, **opts)
    return kl_sampled_(z, target.ids, target.values, mask, **opts)


class TritonKLFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target: Target, mask, temperature, softcap, inplace, compute_grad, block_v):
        buf = logits.detach()
        if buf.stride(1) != 1 or (compute_grad and not inplace):
            buf = buf.clone(memory_format=torch.contiguous_format)  # the caller's logits stay as they are
        loss_rows = kl_forward_(buf, target, mask, temperature=temperature, softcap=softcap,
                                compute_grad=compute_grad, block_v=block_v)
        if compute_grad:
            ctx.save_for_backward(buf)
        ctx.used = False
        return loss_rows.sum()

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.used:
            raise RuntimeError("backward through a Triton KL loss can run once: its gradient buffer is "
                               "scaled in place (do not use retain_graph=True through it)")
        ctx.used = True
        (grad,) = ctx.saved_tensors
        scale_grad_(grad, grad_output)
        return grad, None, None, None, None, None, None, None


def kl_triton(student_logits: torch.Tensor, target, *, kind: str, temperature: float = 1.0,
              softcap: float | None = None, mask: torch.Tensor | None = None, inplace: bool = True,
              block_v: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss_sum, n_tokens) of student logits (N, V) against ``target`` (see ``distill.losses.targets``).

    Same value and gradient as the reference. When the logits require grad the forward computes their
    gradient; with ``inplace`` (default) it is written into ``student_logits`` itself, which then no
    longer holds the logits; ``inplace=False`` keeps them and spends one more (N, V) buffer. The
    gradient has the logits' dtype (bf16 logits: a bf16 gradient, from float32 arithmetic). The
    backward can run once. ``block_v`` overrides the vocabulary block (tests use small ones).
    """
    check_options(temperature, softcap)
    if student_logits.dim() != 2 or not student_logits.is_floating_point():
        raise ValueError(f"student logits must be a float tensor (N, V), got {student_logits.dtype} "
                         f"of shape {tuple(student_logits.shape)}")
    n, vocab = student_logits.shape
    t = make_target(kind, target, n, vocab, mask)
    compute_grad = torch.is_grad_enabled() and student_logits.requires_grad
    loss = TritonKLFunction.apply(student_logits, t, mask, float(temperature), softcap, inplace, compute_grad,
                                  block_v)
    return loss, count(mask, n, student_logits.device)
