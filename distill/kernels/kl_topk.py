"""Top-k targets with the exact tail bucket: kernel and host launch function."""

import torch
import triton
import triton.language as tl

from distill.kernels.common import block_v_for, log1p, student_lse, tanh, warps_for, zero_row
from distill.losses.targets import TAIL_FLOOR

# One program per row of N. With z the student's logits, s = capped(z) / T (capped: cap * tanh(z / cap)),
# q = softmax(s), S the k teacher ids with log-probs lp_i (p_i = exp(lp_i)), P = sum_S p_i,
# p_tail = max(1 - P, 0), Q = sum_S q_i and q_tail = 1 - Q:
#
#   loss = T^2 [ sum_S p_i (lp_i - log q_i) + p_tail (log p_tail - log q_tail) ]
#
# Since d log q_i / ds_v = [i = v] - q_v and d log q_tail / ds_v = q_v ([v not in S] / q_tail - 1):
#
#   dKL/ds_v = q_v (P + p_tail) - p_v             for v in S     (= q_v - p_v when P + p_tail = 1)
#   dKL/ds_v = q_v (P + p_tail - p_tail / q_tail)   for v not in S (= q_v (1 - p_tail / q_tail))
#
# and d loss / dz_v = T dKL/ds_v (1 - tanh^2(z_v / cap)). Q is clamped to at most 1 - TAIL_FLOOR (fp32
# cannot resolve a smaller q_tail, see distill.losses.reference.kl_topk); where it is, the tail term is a
# constant and p_tail drops out of the gradient (p_tail -> 0 above). log q_tail = log1p(-Q).
#
# Passes over the row: (1) online log-sum-exp of s; then the k gathered logits give the loss; (2) the
# out-of-set gradient for every v is written over the logits in place (no second (N, V) buffer), and
# after a barrier the k in-set values overwrite their ids. Accumulation is float32 whatever z's dtype.


@triton.jit
def _kl_topk_kernel(
    z_ptr, z_stride,  # (N, V) student logits; overwritten with d loss / dz when COMPUTE_GRAD
    ids_ptr, ids_stride,  # (N, K) token ids, distinct per row
    lp_ptr, lp_stride,  # (N, K) teacher log-probs at temperature T (-inf: padding)
    mask_ptr,  # (N,) uint8, 1 = counted (read only when HAS_MASK)
    loss_ptr,  # (N,) float32 out: per-row loss
    V, K, temperature, softcap, max_set_mass,
    HAS_MASK: tl.constexpr, HAS_SOFTCAP: tl.constexpr, COMPUTE_GRAD: tl.constexpr,
    BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # int64 so that row * stride cannot overflow for N x V >= 2^31
    z_ptr += row * z_stride
    if HAS_MASK:
        if tl.load(mask_ptr + row) == 0:
            tl.store(loss_ptr + row, 0.0)
            if COMPUTE_GRAD:
                zero_row(z_ptr, V, BLOCK_V)
            return
    inv_temp = 1.0 / temperature
    m, log_d = student_lse(z_ptr, V, inv_temp, softcap, HAS_SOFTCAP, BLOCK_V)

    ko = tl.arange(0, BLOCK_K)
    in_k = ko < K
    ids = tl.load(ids_ptr + row * ids_stride + ko, mask=in_k, other=0).to(tl.int64)
    z_set = tl.load(z_ptr + ids, mask=in_k, other=0.0).to(tl.float32)  # read before pass 2 overwrites them
    if HAS_SOFTCAP:
        th_set = tanh(z_set / softcap)
        z_set = softcap * th_set
    log_q_set = (z_set * inv_temp - m) - log_d
    q_set = tl.where(in_k, tl.exp(log_q_set), 0.0)
    lp = tl.load(lp_ptr + row * lp_stride + ko, mask=in_k, other=float("-inf")).to(tl.float32)
    p_set = tl.exp(lp)
    mass_p = tl.sum(p_set, axis=0)
    p_tail = tl.maximum(1.0 - mass_p, 0.0)
    mass_q = tl.sum(q_set, axis=0)
    clamped = mass_q > max_set_mass
    q_tail = 1.0 - tl.minimum(mass_q, max_set_mass)
    log_q_tail = log1p(-tl.minimum(mass_q, max_set_mass))
    # 0 log 0 = 0, written so that no 0 * -inf is computed (padding entries have lp = -inf)
    in_set = tl.sum(p_set * (tl.where(p_set > 0, lp, 0.0) - log_q_set), axis=0)
    tail = p_tail * (tl.log(tl.where(p_tail > 0, p_tail, 1.0)) - log_q_tail)
    tl.store(loss_ptr + row, (in_set + tail) * temperature * temperature)

    if COMPUTE_GRAD:
        pt = tl.where(clamped, 0.0, p_tail)
        out_coef = (mass_p + pt - pt / q_tail) * temperature
        for start in range(0, V, BLOCK_V):
            offs = start + tl.arange(0, BLOCK_V)
            z = tl.load(z_ptr + offs, mask=offs < V, other=0.0).to(tl.float32)
            if HAS_SOFTCAP:
                th = tanh(z / softcap)
                z = softcap * th
            g = tl.exp((z * inv_temp - m) - log_d) * out_coef
            if HAS_SOFTCAP:
                g = g * (1.0 - th * th)
            tl.store(z_ptr + offs, g.to(z_ptr.dtype.element_ty), mask=offs < V)
        # Every thread's out-of-set stores must land before the in-set values replace k of them.
        tl.debug_barrier()
        g_set = (q_set * (mass_p + pt) - p_set) * temperature
        if HAS_SOFTCAP:
            g_set = g_set * (1.0 - th_set * th_set)
        tl.store(z_ptr + ids, g_set.to(z_ptr.dtype.element_ty), mask=in_k)


def kl_topk_(z: torch.Tensor, ids: torch.Tensor, logprobs: torch.Tensor, mask: torch.Tensor | None,
             *, temperature: float, softcap: float | None, compute_grad: bool,
             block_v: int | None = None) -> torch.Tensor:
    """Per-row loss (N,) float32; with compute_grad, z (N, V), rows contiguous, holds d loss / dz after."""
    n, vocab = z.shape
    k = ids.shape[1]
    ids, logprobs = ids.contiguous(), logprobs.contiguous()
    loss = torch.empty(n, dtype=torch.float32, device=z.device)
    block_v = block_v or block_v_for(vocab)
    _kl_topk_kernel[(n,)](
        z, z.stride(0), ids, ids.stride(0), logprobs, logprobs.stride(0),
        loss if mask is None else mask.view(torch.uint8), loss,
        vocab, k, float(temperature), float(softcap or 1.0), 1.0 - TAIL_FLOOR,
        HAS_MASK=mask is not None, HAS_SOFTCAP=softcap is not None, COMPUTE_GRAD=compute_grad,
        BLOCK_V=block_v, BLOCK_K=max(16, triton.next_power_of_2(k)), num_warps=warps_for(block_v),
    )
    return loss
