"""Building blocks the three KL kernels share: Gemma-2's softcap, an online log-sum-exp step, log1p.

Everything here runs in float32 on values upcast at load. ``tanh`` and ``log1p`` are written with
``exp``/``log`` because ``tl.math`` has neither and the CPU interpreter (TRITON_INTERPRET=1, what the
tests run) does not execute libdevice calls.
"""

import triton
import triton.language as tl


def block_v_for(vocab: int) -> int:
    """Vocabulary elements one program handles per step (untuned default; tune on the target GPU)."""
    return min(8192, triton.next_power_of_2(vocab))


def warps_for(block_v: int) -> int:
    return 4 if block_v <= 1024 else 8 if block_v <= 4096 else 16


@triton.jit
def tanh(x):
    # tanh|x| = (1 - e) / (1 + e) with e = exp(-2|x|) cannot overflow, but 1 - e cancels for small |x|:
    # below |x| = 1/4 use the odd Taylor series to x^9 (truncation error < 1e-8 relative there).
    a = tl.abs(x)
    e = tl.exp(-2.0 * a)
    large = (1.0 - e) / (1.0 + e)
    a2 = a * a
    small = a * (1.0 + a2 * (-1.0 / 3 + a2 * (2.0 / 15 + a2 * (-17.0 / 315 + a2 * (62.0 / 2835)))))
    t = tl.where(a < 0.25, small, large)
    return tl.where(x < 0, -t, t)


@triton.jit
def log1p(x):
    # Goldberg's trick: log(u) * x / (u - 1) with u = 1 + x cancels the rounding of u, so it is accurate
    # for small |x| where log(1 + x) would lose x's low bits.
    u = 1.0 + x
    safe = tl.where(u == 1.0, 1.0, u - 1.0)
    return tl.where(u == 1.0, x, tl.log(u) * (x / safe))


@triton.jit
def online_lse_step(m, d, x):
    """Fold one block x into a running log-sum-exp m + log(d), with d = sum exp(values - m) so far.

    -inf entries (padding lanes, tokens of probability 0) contribute 0; while every value seen is
    -inf, m stays -inf and d 0 (the subtraction is shifted by 0 then, so no inf - inf appears)."""
    m_new = tl.maximum(m, tl.max(x, axis=0))
    shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    d = d * tl.exp(m - shift) + tl.sum(tl.exp(x - shift), axis=0)
    return m_new, d


@triton.jit
def student_lse(z_ptr, V, inv_temp, softcap, HAS_SOFTCAP: tl.constexpr, BLOCK_V: tl.constexpr):
    """(m, log d) with lse = m + log d over the row of s = capped(z) / T: the online-softmax pass.

    Kept apart because log q = (s - m) - log d is accurate for the large s that carry the mass, while
    s - (m + log d) would round m + log d to ulp(m) (4e-6 at m ~ 40)."""
    m = float("-inf")
    d = 0.0
    for start in range(0, V, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        z = tl.load(z_ptr + offs, mask=offs < V, other=0.0).to(tl.float32)
        if HAS_SOFTCAP:
            z = softcap * tanh(z / softcap)
        s = tl.where(offs < V, z * inv_temp, float("-inf"))
        m, d = online_lse_step(m, d, s)
    return m, tl.log(d)


@triton.jit
def zero_row(z_ptr, V, BLOCK_V: tl.constexpr):
    """A row that is not counted has gradient 0 (the buffer still holds its logits)."""
    for start in range(0, V, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        tl.store(z_ptr + offs, tl.zeros([BLOCK_V], dtype=z_ptr.dtype.element_ty), mask=offs < V)
