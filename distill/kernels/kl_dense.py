"""Dense targets (the teacher's full logits): kernel and host launch function."""

import torch
import triton
import triton.language as tl

from distill.kernels.common import block_v_for, online_lse_step, tanh, warps_for, zero_row

# One program per row of N. With z the student's logits, s = capped(z) / T, t the teacher's logits,
# log q = s - lse(s) and log p = t / T - lse(t / T):
#
#   loss = T^2 sum_v p_v (log p_v - log q_v)      (terms with p_v = 0 are 0: a -inf teacher logit)
#   dKL/ds_v = q_v - p_v                           (sum_v p_v = 1)
#   d loss / dz_v = T (q_v - p_v) (1 - tanh^2(z_v / cap))
#
# Passes over the row: (1) online log-sum-exp of s and of t / T together, one read of each; (2) the
# loss terms and the gradient, written over the student's logits in place. Accumulation is float32.


@triton.jit
def _kl_dense_kernel(
    z_ptr, z_stride,  # (N, V) student logits; overwritten with d loss / dz when COMPUTE_GRAD
    t_ptr, t_stride,  # (N, V) teacher logits, raw (divided by T here)
    mask_ptr,  # (N,) uint8, 1 = counted (read only when HAS_MASK)
    loss_ptr,  # (N,) float32 out: per-row loss
    V, temperature, softcap,
    HAS_MASK: tl.constexpr, HAS_SOFTCAP: tl.constexpr, COMPUTE_GRAD: tl.constexpr, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # int64 so that row * stride cannot overflow for N x V >= 2^31
    z_ptr += row * z_stride
    t_ptr += row * t_stride
    if HAS_MASK:
        if tl.load(mask_ptr + row) == 0:
            tl.store(loss_ptr + row, 0.0)
            if COMPUTE_GRAD:
                zero_row(z_ptr, V, BLOCK_V)
            return
    inv_temp = 1.0 / temperature
    m_s = float("-inf")
    d_s = 0.0
    m_t = float("-inf")
    d_t = 0.0
    for start in range(0, V, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        z = tl.load(z_ptr + offs, mask=offs < V, other=0.0).to(tl.float32)
        if HAS_SOFTCAP:
            z = softcap * tanh(z / softcap)
        s = tl.where(offs < V, z * inv_temp, float("-inf"))
        t = tl.load(t_ptr + offs, mask=offs < V, other=float("-inf")).to(tl.float32) * inv_temp
        m_s, d_s = online_lse_step(m_s, d_s, s)
        m_t, d_t = online_lse_step(m_t, d_t, t)
    log_d_s = tl.log(d_s)  # log q = (s - m) - log d: see common.student_lse
    log_d_t = tl.log(d_t)

    acc = tl.zeros([BLOCK_V], dtype=tl.float32)
    for start in range(0, V, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        z = tl.load(z_ptr + offs, mask=offs < V, other=0.0).to(tl.float32)
        if HAS_SOFTCAP:
            th = tanh(z / softcap)
            z = softcap * th
        log_q = (z * inv_temp - m_s) - log_d_s
        t = tl.load(t_ptr + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
        log_p = (t * inv_temp - m_t) - log_d_t
        p = tl.exp(log_p)
        acc += p * (tl.where(p > 0, log_p, 0.0) - log_q)  # 0 log 0 = 0 (and no 0 * -inf computed)
        if COMPUTE_GRAD:
            g = (tl.exp(log_q) - p) * temperature
            if HAS_SOFTCAP:
                g = g * (1.0 - th * th)
            tl.store(z_ptr + offs, g.to(z_ptr.dtype.element_ty), mask=offs < V)
    tl.store(loss_ptr + row, tl.sum(acc, axis=0) * temperature * temperature)


def kl_dense_(z: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None, *, temperature: float,
              softcap: float | None, compute_grad: bool, block_v: int | None = None) -> torch.Tensor:
    """Per-row loss (N,) float32; with compute_grad, z (N, V), rows contiguous, holds d loss / dz after."""
    n, vocab = z.shape
    if teacher.stride(1) != 1:
        teacher = teacher.contiguous()
    loss = torch.empty(n, dtype=torch.float32, device=z.device)
    block_v = block_v or block_v_for(vocab)
    _kl_dense_kernel[(n,)](
        z, z.stride(0), teacher, teacher.stride(0),
        loss if mask is None else mask.view(torch.uint8), loss,
        vocab, float(temperature), float(softcap or 1.0),
        HAS_MASK=mask is not None, HAS_SOFTCAP=softcap is not None, COMPUTE_GRAD=compute_grad,
        BLOCK_V=block_v, num_warps=warps_for(block_v),
    )
    return loss
