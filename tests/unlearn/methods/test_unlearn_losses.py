"""Each method's loss against a value worked out by hand on a tiny example."""

import math
from types import SimpleNamespace

import pytest
import torch

from distill.data import IGNORE_INDEX
from unlearn.methods import graddiff, maxent, npo, simnpo
from unlearn.methods.terms import LogitTerms, TermsModel


class FixedLogits(torch.nn.Module):
    """A 'model' whose logits are given; batch rows are looked up by their first token id."""

    def __init__(self, table: dict[int, torch.Tensor]):
        super().__init__()
        self.table = table
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the output a grad path

    def forward(self, input_ids, attention_mask=None, **_):
        logits = torch.stack([self.table[int(row[0])] for row in input_ids]) + self.anchor
        return SimpleNamespace(logits=logits)


def rows(ids, labels):
    ids = torch.tensor(ids)
    return {"input_ids": ids, "labels": torch.tensor(labels), "attention_mask": torch.ones_like(ids)}


LN = math.log
# One forget row of 3 tokens; positions 0 and 1 predict tokens 1 and 2 (labels 0 is never a target).
# Position 0: p = (1/2, 1/4, 1/4); position 1: p = (1/4, 1/4, 1/2).
FORGET_LOGITS = torch.tensor([[LN(2), 0.0, 0.0], [0.0, 0.0, LN(2)], [0.0, 0.0, 0.0]])
FORGET = rows([[7, 1, 2]], [[IGNORE_INDEX, 1, 2]])
# One retain row: position 0 predicts token 0 with p = 1/2 (p = (1/2, 1/4, 1/4)).
RETAIN_LOGITS = torch.tensor([[LN(2), 0.0, 0.0], [0.0, 0.0, 0.0]])
RETAIN = rows([[8, 0]], [[8, 0]])
MODEL = TermsModel(FixedLogits({7: FORGET_LOGITS, 8: RETAIN_LOGITS}), fused=False)
BATCH = {"forget": FORGET, "retain": RETAIN}
# Totals as if the step held 4 forget tokens, 2 forget rows and 5 retain tokens (on other ranks too).
TOTALS = {"forget": 4.0, "forget_seqs": 2.0, "retain": 5.0}
# Forget answer log-probs: position 0 -> token 1 (1/4), position 1 -> token 2 (1/2).
FORGET_LOGP = LN(1 / 4) + LN(1 / 2)
RETAIN_CE = -LN(1 / 2)


def test_graddiff():
    hp = graddiff.Hparams(retain_weight=3.0)
    loss, parts = graddiff.Objective(hp)(MODEL, BATCH, TOTALS)
    assert loss.item() == pytest.approx(FORGET_LOGP / 4 + 3.0 * RETAIN_CE / 5)
    assert parts["forget"].item() == pytest.approx(-FORGET_LOGP)


def test_maxent():
    loss, _ = maxent.Objective(maxent.Hparams(retain_weight=2.0))(MODEL, BATCH, TOTALS)
    # KL(U || p) = -log 3 - mean_v log p_v at each of the two answer positions (same p up to order).
    kl_one = -LN(3) - (LN(1 / 2) + 2 * LN(1 / 4)) / 3
    assert loss.item() == pytest.approx(2 * kl_one / 4 + 2.0 * RETAIN_CE / 5)
    assert kl_one > 0


def test_npo_against_a_reference():
    # The reference puts p = 1/3 on every token: log pi_ref(y) = 2 log(1/3).
    ref = TermsModel(FixedLogits({7: torch.zeros(3, 3), 8: torch.zeros(2, 3)}), fused=False)
    hp = npo.Hparams(beta=0.5, retain_weight=1.0)
    loss, _ = npo.Objective(hp, reference=ref)(MODEL, BATCH, TOTALS)
    ratio = FORGET_LOGP - 2 * LN(1 / 3)
    per_seq = -(2 / 0.5) * LN(1 / (1 + math.exp(0.5 * ratio)))  # -(2/b) log sigmoid(-b r)
    assert loss.item() == pytest.approx(per_seq / 2 + RETAIN_CE / 5)


def test_npo_refuses_to_run_without_a_reference():
    with pytest.raises(ValueError, match="needs a frozen reference"):
        npo.Objective(npo.Hparams())


def test_simnpo():
    hp = simnpo.Hparams(beta=2.0, delta=0.5, retain_weight=1.0)
    loss, _ = simnpo.Objective(hp)(MODEL, BATCH, TOTALS)
    mean_nll = -FORGET_LOGP / 2
    per_seq = -(2 / 2.0) * LN(1 / (1 + math.exp(-2.0 * (mean_nll - 0.5))))
    assert loss.item() == pytest.approx(per_seq / 2 + RETAIN_CE / 5)


def test_ignored_labels_are_masked_before_the_gather():
    logits = torch.randn(1, 3, 5)
    picked = LogitTerms(logits).logprobs(torch.tensor([[0, IGNORE_INDEX, 4]]))
    assert picked[0, 0].item() == 0.0
    assert picked[0, 1].item() == pytest.approx(torch.log_softmax(logits[0, 1], -1)[4].item())
    # Changing the logits at an ignored position changes nothing.
    bumped = logits.clone()
    bumped[0, 0] += 10.0
    assert torch.equal(LogitTerms(bumped).logprobs(torch.tensor([[0, IGNORE_INDEX, 4]])), picked)


def test_padding_rows_do_not_count():
    padded = {"forget": rows([[7, 1, 2], [7, 0, 0]], [[IGNORE_INDEX, 1, 2], [IGNORE_INDEX] * 3]), "retain": RETAIN}
    obj = simnpo.Objective(simnpo.Hparams(beta=2.0, delta=0.5))
    assert obj.count(padded)["forget_seqs"] == 1
    one, _ = obj(MODEL, BATCH, TOTALS)
    two, _ = obj(MODEL, padded, TOTALS)
    assert two.item() == pytest.approx(one.item())
