"""Weighted sampled targets (cross-entropy against the weights): kernel and host launch function."""

import torch
import triton
import triton.language as tl

from distill.kernels.common import block_v_for, student_lse, tanh, warps_for, zero_row

# One program per row of N. With z the student's logits, s = capped(z) / T, q = softmax(s), and samples
# (id_j, w_j), j < K, weights >= 0 summing to W (1 on a counted row), ids possibly repeated:
#
#   loss = -T^2 sum_j w_j log q_{id_j} = -T^2 sum_j w_j (s_{id_j} - lse(s))
#
# Since d log q_i / ds_v = [i = v] - q_v:
#
#   dCE/ds_v = q_v W - sum_{j: id_j = v} w_j
#
# and d loss / dz_v = T dCE/ds_v (1 - tanh^2(z_v / cap)). Repeated ids: each sample's store writes its
# id's total weight (a K x K comparison, K <= a few hundred), so duplicates store the same value and the
# order of the racing stores does not matter.
#
# Passes over the row: (1) online log-sum-exp of s; the K gathered logits give the loss; (2) q_v W is
# written over the logits in place, and after a barrier the K sampled ids are overwritten.


@triton.jit
def _kl_sampled_kernel(
    z_ptr, z_stride,  # (N, V) student logits; overwritten with d loss / dz when COMPUTE_GRAD
    ids_ptr, ids_stride,  # (N, K) sampled token ids
    w_ptr, w_stride,  # (N, K) weights >= 0
    mask_ptr,  # (N,) uint8, 1 = counted (read only when HAS_MASK)
    loss_ptr,  # (N,) float32 out: per-row loss
    V, K, temperature, softcap,
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
    w = tl.load(w_ptr + row * w_stride + ko, mask=in_k, other=0.0).to(tl.float32)
    z_set = tl.load(z_ptr + ids, mask=in_k, other=0.0).to(tl.float32)  # read before pass 2 overwrites them
    if HAS_SOFTCAP:
        th_set = tanh(z_set / softcap)
        z_set = softcap * th_set
    log_q_set = (z_set * inv_temp - m) - log_d
    loss = -tl.sum(w * log_q_set, axis=0)
    tl.store(loss_ptr + row, loss * temperature * temperature)

    if COMPUTE_GRAD:
        w_total = tl.sum(w, axis=0)
        out_coef = w_total * temperature
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
        # Every thread's stores above must land before the sampled ids are overwritten.
        tl.debug_barrier()
        same = (ids[:, None] == ids[None, :]) & in_k[None, :]
        w_of_id = tl.sum(tl.where(same, w[None, :], 0.0), axis=1)
        g_set = (tl.exp(log_q_set) * w_total - w_of_id) * temperature
        if HAS_SOFTCAP:
            g_set = g_set * (1.0 - th_set * th_set)
        tl.store(z_ptr + ids, g_set.to(z_ptr.dtype.element_ty), mask=in_k)


def kl_sampled_(z: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor | None,
                *, temperature: float, softcap: float | None, compute_grad: bool,
                block_v: int | None = None) -> torch.Tensor:
    """Per-row loss (N,) float32; with compute_grad, z (N, V), rows contiguous, holds d loss / dz after."""
    n, vocab = z.shape
    k = ids.shape[1]
    ids, weights = ids.contiguous(), weights.contiguous()
    loss = torch.empty(n, dtype=torch.float32, device=z.device)
    block_v = block_v or block_v_for(vocab)
    _kl_sampled_kernel[(n,)](
        z, z.stride(0), ids, ids.stride(0), weights, weights.stride(0),
        loss if mask is None else mask.view(torch.uint8), loss,
        vocab, k, float(temperature), float(softcap or 1.0),
        HAS_MASK=mask is not None, HAS_SOFTCAP=softcap is not None, COMPUTE_GRAD=compute_grad,
        BLOCK_V=block_v, BLOCK_K=max(16, triton.next_power_of_2(k)), num_warps=warps_for(block_v),
    )
    return loss
