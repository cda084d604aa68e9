"""The math of the distillation losses, once, in plain PyTorch: the source of truth for every faster path.

Tests compare the chunked, fused-linear and Triton paths against these functions, and the benchmark
uses them as its plain-PyTorch baseline. They materialise everything ((N, V) log-probabilities and
autograd's buffers) and favour clarity over memory.

Conventions, shared by every implementation in this package:

- Shapes: student logits (N, V) for N tokens over a vocabulary of V; targets as in ``distill.losses.targets``.
- Direction: forward KL(teacher || student) = sum_v p_v (log p_v - log q_v), p the teacher, q the student.
- Softcap (Gemma-2's final-logit softcapping) applies to the *student's* logits only, before the
  temperature: z -> cap * tanh(z / cap). A teacher's dense logits are taken as they are (a Hugging Face
  Gemma-2 forward already caps its output), and sparse targets are stored probabilities.
- Temperature T: q = softmax(capped(z) / T); dense p = softmax(teacher_logits / T); top-k log-probs and
  sampled weights are given at temperature T already. The per-token loss is multiplied by T^2 (Hinton
  et al.), so the gradient with respect to the logits, T * (q - p), does not shrink as 1/T.
- Reduction: every function returns (sum of per-token losses over counted rows, number of counted rows);
  the caller divides by its global count (gradient accumulation, data parallelism).
- Precision: computed in float32, or float64 for float64 inputs; the loss is a float scalar tensor.
"""

from __future__ import annotations

import torch

from distill.losses.targets import TAIL_FLOOR, Target, check_options, make_target


def softcap_logits(logits: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """Gemma-2's final-logit softcap, cap * tanh(logits / cap); identity when softcap is None."""
    return logits if softcap is None else softcap * torch.tanh(logits / softcap)


def student_log_probs(student_logits: torch.Tensor, temperature: float = 1.0,
                      softcap: float | None = None) -> torch.Tensor:
    """log q (N, V): log-softmax of the capped logits divided by T, in at least float32."""
    z = student_logits.to(_compute_dtype(student_logits))
    return torch.log_softmax(softcap_logits(z, softcap) / temperature, dim=-1)


def kl_dense(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0,
             softcap: float | None = None, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """T^2 * KL(softmax(teacher / T) || softmax(capped(student) / T)) summed over counted rows.

    student_logits, teacher_logits: (N, V). A teacher logit of -inf is a token of probability 0 (0 log 0 = 0).
    """
    t = _checked("dense", teacher_logits, student_logits, temperature, softcap, mask)
    z, teacher = _counted(student_logits, mask), _counted(t.values, mask)
    log_q = student_log_probs(z, temperature, softcap)
    log_p = torch.log_softmax(teacher.to(log_q.dtype) / temperature, dim=-1)
    p = log_p.exp()
    per_token = torch.where(p > 0, p * (log_p - log_q), 0.0).sum(-1)
    return _result(per_token, temperature, student_logits.shape[0], mask)


def kl_topk(student_logits: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor, *,
            temperature: float = 1.0, softcap: float | None = None,
            mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """T^2 * KL over the k teacher tokens S plus one tail bucket holding the rest of the vocabulary:

        sum_{i in S} p_i (log p_i - log q_i) + p_tail (log p_tail - log q_tail),
        p_tail = 1 - sum_{i in S} p_i,  q_tail = 1 - sum_{i in S} q_i.

    This is the exact KL between the two (k+1)-bucket coarsenings of p and q, so 0 <= it <= the full KL.
    topk_ids (N, k) distinct per row; topk_logprobs (N, k) teacher log-probs at temperature T.

    Edge cases: p_tail is clamped at 0 (stored log-probs whose masses round above 1) and 0 log 0 = 0.
    log q_tail is computed as log1p(-sum_S q_i), accurate while q_tail is near 1, with sum_S q_i
    clamped to at most 1 - TAIL_FLOOR (2^-20 ~ 1e-6): when the student puts all but less than that on
    S, float32 cannot resolve q_tail (it would round to 0 and the loss to +inf; near the floor its
    error is already ~10%), so the tail term is held at p_tail (log p_tail - log TAIL_FLOOR) and gives
    no gradient, while the in-set terms still pull q_S towards p_S. The clamp can make the loss
    negative by at most log(1 + TAIL_FLOOR) ~ 1e-6 per token; otherwise it is >= 0 up to rounding.
    """
    t = _checked("topk", (topk_ids, topk_logprobs), student_logits, temperature, softcap, mask)
    log_q = student_log_probs(_counted(student_logits, mask), temperature, softcap)
    ids, lp = _counted(t.ids, mask).long(), _counted(t.values, mask).to(log_q.dtype)
    log_q_set = log_q.gather(1, ids)
    p_set = lp.exp()
    p_tail = (1 - p_set.sum(-1)).clamp(min=0)
    q_set_mass = log_q_set.exp().sum(-1).clamp(max=1 - TAIL_FLOOR)
    log_q_tail = torch.log1p(-q_set_mass)
    in_set = torch.where(p_set > 0, p_set * (lp - log_q_set), 0.0).sum(-1)
    tail = torch.xlogy(p_tail, p_tail) - p_tail * log_q_tail
    return _result(in_set + tail, temperature, student_logits.shape[0], mask)


def kl_sampled(student_logits: torch.Tensor, sample_ids: torch.Tensor, sample_weights: torch.Tensor, *,
               temperature: float = 1.0, softcap: float | None = None,
               mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """T^2 * cross-entropy against weighted samples: -sum_j w_j log q_{id_j} per row.

    sample_ids, sample_weights: (N, s); weights >= 0 summing to 1 per counted row; repeated ids add up.
    With weights that estimate p without bias (Anshumann et al. 2025) this is an unbiased estimate of
    the cross-entropy H(p, q) = KL(p || q) + H(p): it differs from the KL by a constant of the teacher,
    so its gradient is the KL's and its value is >= 0 but not 0 at a perfect match.
    """
    t = _checked("sampled", (sample_ids, sample_weights), student_logits, temperature, softcap, mask)
    log_q = student_log_probs(_counted(student_logits, mask), temperature, softcap)
    ids, w = _counted(t.ids, mask).long(), _counted(t.values, mask).to(log_q.dtype)
    per_token = -(w * log_q.gather(1, ids)).sum(-1)
    return _result(per_token, temperature, student_logits.shape[0], mask)


def reference_kl(student_logits: torch.Tensor, target, *, kind: str, temperature: float = 1.0,
                 softcap: float | None = None, mask: torch.Tensor | None = None):
    """The reference for a target given the way the fast paths take it: a tensor (dense) or a pair."""
    if kind == "dense":
        return kl_dense(student_logits, target, temperature=temperature, softcap=softcap, mask=mask)
    fn = {"topk": kl_topk, "sampled": kl_sampled}.get(kind)
    if fn is None or not (isinstance(target, (tuple, list)) and len(target) == 2):
        make_target(kind, target, *student_logits.shape)  # raises, naming what is wrong
    return fn(student_logits, *target, temperature=temperature, softcap=softcap, mask=mask)


# -- helpers ---------------------------------------------------------------------------------------
def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _checked(kind, target, student_logits, temperature, softcap, mask) -> Target:
    check_options(temperature, softcap)
    if student_logits.dim() != 2 or not student_logits.is_floating_point():
        raise ValueError(f"student logits must be a float tensor (N, V), got {student_logits.dtype} "
                         f"of shape {tuple(student_logits.shape)}")
    return make_target(kind, target, *student_logits.shape, mask=mask)


def _counted(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    # Dropping the rows that are not counted (rather than zeroing their loss) keeps whatever they hold
    # (NaN, padding ids) out of the arithmetic, so it cannot leak into the loss or the gradient.
    return x if mask is None else x[mask]


def _result(per_token: torch.Tensor, temperature: float, n: int, mask: torch.Tensor | None):
    count = n if mask is None else int(mask.sum())
    return per_token.sum() * temperature**2, torch.tensor(count, dtype=torch.int64, device=per_token.device)
