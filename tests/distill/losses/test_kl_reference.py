"""The reference losses against independent formulas (float64), and the checks every path shares."""

import math

import pytest
import torch
import torch.nn.functional as F

from distill.losses import TAIL_FLOOR, kl_dense, kl_sampled, kl_topk, reference_kl
from distill.losses.synthetic import teacher_target


def logits(n, v, seed, scale=3.0):
    return scale * torch.randn(n, v, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_dense_is_t2_times_torch_kl_div_of_the_softmaxes_with_softcap_on_the_student_only():
    z, t = logits(6, 37, 0), logits(6, 37, 1)
    temp, cap = 1.7, 4.0
    loss, n = kl_dense(z, t, temperature=temp, softcap=cap)
    log_q = F.log_softmax(cap * torch.tanh(z / cap) / temp, -1)
    log_p = F.log_softmax(t / temp, -1)
    expected = temp**2 * F.kl_div(log_q, log_p, log_target=True, reduction="sum")
    assert int(n) == 6
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)


def test_gradient_is_t_times_q_minus_p_so_it_does_not_shrink_with_temperature():
    z, t = logits(4, 29, 2), logits(4, 29, 3)
    for temp in (0.5, 1.0, 4.0):
        zz = z.clone().requires_grad_()
        kl_dense(zz, t, temperature=temp)[0].backward()
        q, p = F.softmax(z / temp, -1), F.softmax(t / temp, -1)
        torch.testing.assert_close(zz.grad, temp * (q - p), rtol=1e-10, atol=1e-12)


def bucket_kl(p, q, ids):
    """KL between the (k+1)-bucket coarsenings of full distributions p and q, built explicitly."""
    p_set, q_set = p.gather(1, ids), q.gather(1, ids)
    pb = torch.cat([p_set, 1 - p_set.sum(1, keepdim=True)], 1)
    qb = torch.cat([q_set, 1 - q_set.sum(1, keepdim=True)], 1)
    return torch.where(pb > 0, pb * (pb.log() - qb.log()), 0.0).sum()


@pytest.mark.parametrize("k", [1, 5, 64])
def test_topk_is_the_exact_kl_of_the_bucketed_distributions_and_a_lower_bound_of_the_full_kl(k):
    z, t = logits(5, 97, 4), logits(5, 97, 5)
    temp = 1.3
    ids, lp = teacher_target(t, "topk", k=k, temperature=temp, values_dtype=torch.float64)
    loss, _ = kl_topk(z, ids, lp, temperature=temp)
    p, q = F.softmax(t / temp, -1), F.softmax(z / temp, -1)
    torch.testing.assert_close(loss, temp**2 * bucket_kl(p, q, ids), rtol=1e-10, atol=1e-12)
    full, _ = kl_dense(z, t, temperature=temp)
    assert 0 <= float(loss) <= float(full)


def test_topk_over_the_whole_vocabulary_is_the_dense_kl():
    z, t = logits(3, 40, 6), logits(3, 40, 7)
    ids, lp = teacher_target(t, "topk", k=40, values_dtype=torch.float64)
    torch.testing.assert_close(kl_topk(z, ids, lp)[0], kl_dense(z, t)[0], rtol=1e-9, atol=1e-10)


def test_topk_gradient_is_q_minus_p_in_the_set_and_q_times_one_minus_ptail_over_qtail_outside():
    z, t = logits(4, 50, 8), logits(4, 50, 9)
    ids, lp = teacher_target(t, "topk", k=7, values_dtype=torch.float64)
    zz = z.clone().requires_grad_()
    kl_topk(zz, ids, lp)[0].backward()
    q, p = F.softmax(z, -1), lp.exp()
    p_tail = 1 - p.sum(1, keepdim=True)
    q_tail = 1 - q.gather(1, ids).sum(1, keepdim=True)
    expected = q * (1 - p_tail / q_tail)
    expected.scatter_(1, ids, q.gather(1, ids) - p)
    torch.testing.assert_close(zz.grad, expected, rtol=1e-9, atol=1e-12)


def test_topk_stays_finite_and_nonnegative_when_the_student_puts_all_its_mass_on_the_set():
    t = logits(3, 60, 10)
    ids, lp = teacher_target(t, "topk", k=4, values_dtype=torch.float32)
    z = torch.zeros(3, 60, dtype=torch.float32)
    z.scatter_(1, ids, 60.0)  # q_tail = 56 e^-60 ~ 5e-25: 1 - sum_S q rounds to 0 in float32
    zz = z.clone().requires_grad_()
    loss, _ = kl_topk(zz, ids, lp)
    loss.backward()
    loss = loss.detach()
    assert math.isfinite(float(loss)) and float(loss) >= -TAIL_FLOOR * 3
    # clamped: the tail term is a constant, so the gradient is that of the in-set terms alone
    q, p = F.softmax(z.double(), -1), lp.double().exp()
    expected = q * p.sum(1, keepdim=True)
    expected.scatter_(1, ids, q.gather(1, ids) * p.sum(1, keepdim=True) - p)
    torch.testing.assert_close(zz.grad.double(), expected, rtol=1e-5, atol=1e-7)
    p_tail = 1 - p.sum(1)
    torch.testing.assert_close(float(loss), float(((p * (lp.double() - q.gather(1, ids).log())).sum(1)
                                                    + p_tail * (p_tail.log() - math.log(TAIL_FLOOR))).sum()),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_losses_are_never_negative_beyond_rounding(seed):
    g = torch.Generator().manual_seed(seed)
    for scale in (0.01, 1.0, 10.0):
        t = scale * torch.randn(8, 200, generator=g, dtype=torch.float32)
        z = t + 0.01 * torch.randn(8, 200, generator=g, dtype=torch.float32)  # near the teacher: KL ~ 0
        for k in (1, 16, 200):
            ids, lp = teacher_target(t, "topk", k=k)
            assert float(kl_topk(z, ids, lp)[0]) >= -8 * TAIL_FLOOR
        assert float(kl_dense(z, t)[0]) >= -1e-5
        assert float(kl_dense(t, t)[0]) == pytest.approx(0.0, abs=1e-5)


def test_sampled_with_the_teacher_distribution_as_weights_is_the_kl_plus_the_teacher_entropy():
    z, t = logits(4, 30, 11), logits(4, 30, 12)
    p = F.softmax(t, -1)
    ids = torch.arange(30).expand(4, 30)
    loss, _ = kl_sampled(z, ids, p)
    entropy = -(p * p.log()).sum()
    torch.testing.assert_close(loss, kl_dense(z, t)[0] + entropy, rtol=1e-10, atol=1e-10)


def test_sampled_repeated_ids_add_up():
    z = logits(2, 20, 13)
    ids = torch.tensor([[3, 3, 7, 3], [1, 2, 2, 2]])
    w = torch.full((2, 4), 0.25, dtype=torch.float64)
    merged_ids = torch.tensor([[3, 7], [1, 2]])
    merged_w = torch.tensor([[0.75, 0.25], [0.25, 0.75]], dtype=torch.float64)
    torch.testing.assert_close(kl_sampled(z, ids, w)[0], kl_sampled(z, merged_ids, merged_w)[0])


@pytest.mark.parametrize("kind", ["dense", "topk", "sampled"])
def test_ignored_rows_are_never_read_and_are_not_counted(kind):
    z, t = logits(6, 25, 14), logits(6, 25, 15)
    mask = torch.tensor([True, False, True, True, False, True])
    target = teacher_target(t, kind, k=3, values_dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    garbage = t.masked_fill(~mask[:, None], float("nan")) if kind == "dense" else (
        target[0].masked_fill(~mask[:, None], -100), target[1].masked_fill(~mask[:, None], float("nan")))
    zz = z.clone().requires_grad_()
    loss, n = reference_kl(zz, garbage, kind=kind, mask=mask)
    loss.backward()
    kept = target[mask] if kind == "dense" else (target[0][mask], target[1][mask])
    zk = z[mask].clone().requires_grad_()
    expected, _ = reference_kl(zk, kept, kind=kind)
    expected.backward()
    assert int(n) == 4
    torch.testing.assert_close(loss, expected)
    assert torch.equal(zz.grad[~mask], torch.zeros(2, 25, dtype=torch.float64))
    assert torch.equal(zz.grad[mask], zk.grad)


def test_bf16_inputs_are_computed_in_float32():
    z, t = logits(3, 33, 16).bfloat16(), logits(3, 33, 17).bfloat16()
    loss, _ = kl_dense(z, t)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), kl_dense(z.double(), t.double())[0], rtol=1e-6, atol=1e-6)


BAD_INPUTS = [
    (dict(kind="nope"), "kind must be one of dense, topk, sampled"),
    (dict(temperature=0.0), "temperature must be a finite number > 0"),
    (dict(softcap=-1.0), "softcap must be None"),
    (dict(mask=torch.ones(4, dtype=torch.int64)), "mask must be a bool tensor of shape"),
    (dict(kind="dense", target=torch.zeros(4, 9)), r"dense target \(teacher logits\) must be a float tensor"),
    (dict(kind="topk", target=torch.zeros(4, 3)), "a topk target is a pair"),
    (dict(kind="topk", target=(torch.zeros(4, 3), torch.zeros(4, 3))), "topk ids must be an integer tensor"),
    (dict(kind="topk", target=(torch.zeros(4, 3, dtype=torch.int64), torch.zeros(4, 2))), "topk logprobs must"),
    (dict(kind="topk", target=(torch.full((4, 2), 10), torch.full((4, 2), -5.0))), r"outside \[0, 10\)"),
    (dict(kind="topk", target=(torch.tensor([[1, 1]] * 4), torch.full((4, 2), -5.0))), "must be distinct"),
    (dict(kind="topk", target=(torch.tensor([[1, 2]] * 4), torch.full((4, 2), 2.0))), "raw logits"),
    (dict(kind="sampled", target=(torch.tensor([[1, 2]] * 4), torch.tensor([[1.5, -0.5]] * 4))), "must be >= 0"),
    (dict(kind="sampled", target=(torch.tensor([[1, 2]] * 4), torch.tensor([[3.0, 1.0]] * 4))), "sum to 1"),
]


@pytest.mark.parametrize("bad,message", BAD_INPUTS)
def test_bad_input_is_refused_with_a_message_naming_it(bad, message):
    args = dict(kind="topk", target=(torch.tensor([[1, 2]] * 4), torch.log(torch.tensor([[0.5, 0.25]] * 4))),
                temperature=1.0, softcap=None, mask=None)
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        reference_kl(torch.zeros(4, 10), args.pop("target"), **args)
