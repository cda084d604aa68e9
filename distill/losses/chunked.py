"""The CPU path: the reference's loss with its analytic gradient, chunk by chunk over rows, in place.

``loss_and_grad_`` is the PyTorch twin of the Triton kernels (``distill.kernels``): given a float32
buffer of student logits it returns the per-row losses and, on request, overwrites the buffer with
d(loss)/d(logits), so a chunk of C rows needs its C x V floats (plus one more such buffer with softcap,
a few for dense targets) and nothing of N x V.
The fused-linear path (``distill.losses.fused_linear``) calls it per chunk of hidden states;
``kl_chunked`` wraps it for logits that already exist. The math is the reference's
(``distill.losses.reference``); the gradients, with s = capped(z) / T and q = softmax(s), are

    dense:   dKL/ds_v = q_v - p_v
    topk:    dKL/ds_v = q_v (P + pt) - p_v         for v in S
             dKL/ds_v = q_v (P + pt - pt / q_tail)   outside S
             (P = sum_S p_i, pt = p_tail, or 0 where q_tail is clamped: the tail term is then constant)
    sampled: dCE/ds_v = q_v W - sum_{j: id_j = v} w_j  (W = sum_j w_j)

and d(T^2 loss)/dz = T * dKL/ds * (1 - tanh^2(z / cap)) (the last factor only with softcap).
"""

from __future__ import annotations

import torch

from distill.losses.targets import TAIL_FLOOR, Target, check_options, count, make_target

# Rows per chunk when the caller does not choose: about 128 MiB of float32 logits per chunk.
CHUNK_BYTES = 128 * 2**20


def default_chunk_rows(vocab: int) -> int:
    """Rows per chunk for a vocabulary of V: a power of two holding at most CHUNK_BYTES of fp32 logits."""
    rows = max(1, CHUNK_BYTES // (4 * vocab))
    return 1 << (rows.bit_length() - 1)


@torch.no_grad()
def loss_and_grad_(z: torch.Tensor, target: Target, mask: torch.Tensor | None, *, temperature: float,
                   softcap: float | None, compute_grad: bool) -> torch.Tensor:
    """Per-row loss (C,) float32 of student logits ``z`` (C, V) float32, contiguous, overwritten.

    With compute_grad, ``z`` holds d(loss_row)/dz on return (rows not counted: 0); otherwise it holds
    scratch values. The target's rows align with z's. Written as few passes over (C, V) as PyTorch
    allows: on CPU the chunk's elementwise work is a small fraction of its matmuls.
    """
    if z.dtype != torch.float32 or not z.is_contiguous():
        raise ValueError(f"loss_and_grad_ works in place on contiguous float32 logits, got {z.dtype}")
    dcap = _scale_(z, temperature, softcap, compute_grad)  # z now holds s = capped(z) / T
    ids = None
    if target.kind != "dense":
        ids = target.ids.long()
        if mask is not None:
            ids = ids.masked_fill(~mask[:, None], 0)  # rows not counted may hold padding ids
        s_set = z.gather(1, ids)
    m = z.amax(dim=1, keepdim=True)
    if target.kind == "dense":
        loss = _dense_(z, m, target.values, temperature, compute_grad)
    else:
        e = z.sub_(m).exp_()  # z now holds exp(s - m); q = e / d
        d = e.sum(dim=1, keepdim=True)
        log_q_set = (s_set - m) - d.log()  # not s - (m + log d): m + log d would round to ulp(m)
        fn = _topk_ if target.kind == "topk" else _sampled_
        loss = fn(e, d, ids, log_q_set, target.values.float(), temperature, compute_grad)
    if compute_grad:
        if dcap is not None:
            z.mul_(dcap)
        if mask is not None:
            z[~mask] = 0.0  # only the rows not counted are written
    if mask is not None:
        loss = loss.masked_fill(~mask, 0.0)  # masked_fill, not a product: ignored rows may hold NaN
    return loss * temperature**2


def _scale_(z, temperature, softcap, compute_grad):
    """z -> s = capped(z) / T in place; returns d capped / dz (C, V) with softcap and a gradient, else None."""
    if softcap is None:
        if temperature != 1.0:
            z.div_(temperature)
        return None
    th = z.div_(softcap).tanh_()
    dcap = 1 - th.square() if compute_grad else None  # kept: z will hold the gradient of s, not z
    th.mul_(softcap / temperature)
    return dcap


def _dense_(z, m, teacher, temperature, compute_grad):
    """z holds s; teacher (C, V) raw logits. Returns the KL per row; leaves T dKL/ds = T (q - p) in z."""
    log_p = torch.log_softmax(teacher.float() / temperature, dim=1)
    log_q = z.sub_(m)
    log_q.sub_(torch.logsumexp(log_q, dim=1, keepdim=True))  # z now holds log q
    p = log_p.exp()
    terms = log_p.sub_(log_q).mul_(p)  # p (log p - log q), in log_p's buffer
    loss = terms.masked_fill_(p == 0, 0.0).sum(dim=1)  # 0 log 0 = 0 where the teacher logit is -inf
    if compute_grad:
        z.exp_().sub_(p)
        if temperature != 1.0:
            z.mul_(temperature)
    return loss


def _topk_(e, d, ids, log_q_set, lp, temperature, compute_grad):
    """e (C, V) = exp(s - m), q = e / d. Returns the KL per row with the tail bucket; leaves T dKL/ds in e."""
    p_set = lp.exp()
    mass_p = p_set.sum(1)
    p_tail = (1 - mass_p).clamp(min=0)
    mass_q = log_q_set.exp().sum(1)
    clamped = mass_q > 1 - TAIL_FLOOR
    q_set_mass = mass_q.clamp(max=1 - TAIL_FLOOR)
    q_tail, log_q_tail = 1 - q_set_mass, torch.log1p(-q_set_mass)
    in_set = torch.where(p_set > 0, p_set * (lp - log_q_set), 0.0).sum(1)
    loss = in_set + torch.xlogy(p_tail, p_tail) - p_tail * log_q_tail
    if compute_grad:
        pt = p_tail.masked_fill(clamped, 0.0)
        out_coef = (mass_p + pt - pt / q_tail) * temperature
        in_grad = (log_q_set.exp() * (mass_p + pt)[:, None] - p_set) * temperature
        e.mul_(out_coef[:, None] / d).scatter_(1, ids, in_grad)  # one pass; distinct ids: each written once
    return loss


def _sampled_(e, d, ids, log_q_set, w, temperature, compute_grad):
    """e (C, V) = exp(s - m), q = e / d. Returns the cross-entropy per row; leaves T dCE/ds in e."""
    loss = -(w * log_q_set).sum(1)
    if compute_grad:
        e.mul_(w.sum(1, keepdim=True) * temperature / d).scatter_add_(1, ids, -w * temperature)  # repeats add up
    return loss


def scale_grad_(grad: torch.Tensor, grad_output: torch.Tensor) -> None:
    """grad *= grad_output in place, the product rounded once to grad's dtype.

    A bf16 grad times a float32 grad_output would otherwise round grad_output to bf16 first on some
    devices (a third rounding); low-precision buffers are scaled in float32, a chunk of rows at a time.
    """
    if grad.dtype == torch.float32:
        grad.mul_(grad_output)
        return
    rows = default_chunk_rows(grad.shape[-1])
    for lo in range(0, grad.shape[0], rows):
        part = grad[lo:lo + rows]
        part.copy_(part.float().mul_(grad_output))


# -- logits that already exist: chunked autograd path ----------------------------------------------
class ChunkedKLFunction(torch.autograd.Function):
    """loss_sum of existing logits; the forward computes the gradient chunk by chunk into a buffer
    (the logits themselves when ``inplace``), the backward scales it by grad_output in place."""

    @staticmethod
    def forward(ctx, logits, target: Target, mask, temperature, softcap, chunk_rows, inplace, compute_grad):
        n = logits.shape[0]
        src = logits.detach()
        grad = (src if inplace else torch.empty_like(src)) if compute_grad else None
        loss_rows = torch.empty(n, dtype=torch.float32, device=logits.device)
        for lo in range(0, n, chunk_rows):
            hi = min(n, lo + chunk_rows)
            direct = compute_grad and grad.dtype == torch.float32 and grad[lo:hi].is_contiguous()
            if direct:
                z = grad[lo:hi]  # work directly in the gradient buffer
                if not inplace:
                    z.copy_(src[lo:hi])
            else:  # no gradient, or a low-precision buffer: a float32 copy of the chunk
                z = src[lo:hi].to(torch.float32, copy=True).contiguous()
            loss_rows[lo:hi] = loss_and_grad_(z, target.rows(lo, hi), None if mask is None else mask[lo:hi],
                                              temperature=temperature, softcap=softcap, compute_grad=compute_grad)
            if compute_grad and not direct:
                grad[lo:hi].copy_(z)  # rounds to the logits' dtype (bf16: one rounding, see the tests)
        if compute_grad:
            ctx.save_for_backward(grad)
        ctx.used = False
        return loss_rows.sum()

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.used:
            raise RuntimeError("backward through a chunked KL loss can run once: its gradient buffer is "
                               "scaled in place (do not use retain_graph=True through it)")
        ctx.used = True
        (grad,) = ctx.saved_tensors
        scale_grad_(grad, grad_output)
        return grad, None, None, None, None, None, None, None


def kl_chunked(student_logits: torch.Tensor, target, *, kind: str, temperature: float = 1.0,
               softcap: float | None = None, mask: torch.Tensor | None = None, chunk_size: int | None = None,
               inplace: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss_sum, n_tokens) of student logits (N, V) against ``target`` (see ``distill.losses.targets``).

    Same value and gradient as the reference. When the logits require grad, the forward computes
    their gradient; with ``inplace`` (default) it is written into ``student_logits`` itself, which then
    no longer holds the logits (the memory of one (N, V) buffer saved); ``inplace=False`` keeps them and
    allocates the gradient beside them. The backward can run once.
    """
    check_options(temperature, softcap)
    n, vocab = student_logits.shape
    t = make_target(kind, target, n, vocab, mask)
    rows = chunk_size or default_chunk_rows(vocab)
    compute_grad = torch.is_grad_enabled() and student_logits.requires_grad
    loss = ChunkedKLFunction.apply(student_logits, t, mask, float(temperature), softcap, rows, inplace, compute_grad)
    return loss, count(mask, n, student_logits.device)
