"""Each method's loss against a value worked out by hand on a tiny example."""

import math
from types import SimpleNamespace

import pytest
import torch

from distill.data import IGNORE_INDEX
from unlearn.methods import graddiff, maxent, npo, repnoise, sam, simnpo
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


def test_sam_is_npo_with_a_radius_for_the_engine():
    ref = TermsModel(FixedLogits({7: torch.zeros(3, 3), 8: torch.zeros(2, 3)}), fused=False)
    hp = sam.Hparams(rho=0.3, beta=0.5, retain_weight=1.0)
    obj = sam.Objective(hp, reference=ref)
    loss, _ = obj(MODEL, BATCH, TOTALS)
    plain, _ = npo.Objective(npo.Hparams(beta=0.5, retain_weight=1.0), reference=ref)(MODEL, BATCH, TOTALS)
    assert loss.item() == pytest.approx(plain.item())
    assert obj.sharpness_radius == 0.3  # the engine's SAM step (tests/distill/test_sharpness.py) reads it


def mmd_by_hand(x, z):
    """Squared MMD with the five-bandwidth Gaussian kernel, pair by pair."""
    pts = [p for p in torch.cat([x, z]).double()]
    d2 = [[float(((a - b) ** 2).sum()) for b in pts] for a in pts]
    n = len(pts)
    scale = sum(d2[i][j] for i in range(n) for j in range(n) if i != j) / (n * n - n)

    def k(i, j):
        return sum(math.exp(-d2[i][j] / (b * scale)) for b in (0.25, 0.5, 1.0, 2.0, 4.0))

    nx = len(x)
    xs, zs = range(nx), range(nx, n)
    mean = lambda a, b: sum(k(i, j) for i in a for j in b) / (len(a) * len(b))  # noqa: E731
    return mean(xs, xs) + mean(zs, zs) - 2 * mean(xs, zs)


def test_mmd_against_a_pair_by_pair_sum():
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(5, 3, generator=g) + 1.0, torch.randn(4, 3, generator=g)
    assert repnoise.mmd2(x, z).item() == pytest.approx(mmd_by_hand(x, z), rel=1e-5)
    assert repnoise.mmd2(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_repnoise_by_hand():
    from transformers import LlamaConfig, LlamaForCausalLM

    from distill.data import fetch
    from unlearn.tasks.forget_retain import ForgetRetainDataset
    from unlearn.tasks.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    batch = fetch(ForgetRetainDataset(tok, "*,/", "+,-", num_items=4, seed=0), list(range(4)), tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                         pad_token_id=tok.pad_token_id))
    hp = repnoise.Hparams(alpha=0.7, beta=0.3, retain_weight=2.0, seed=5)
    obj = repnoise.Objective(hp)
    totals = {k: 2.0 * v for k, v in obj.count(batch).items()}  # as if another rank held as many targets
    loss, parts = obj(TermsModel(model, fused=False), batch, totals)

    forget, retain = batch["forget"], batch["retain"]
    outs = []
    hooks = [layer.register_forward_hook(lambda m, i, o: outs.append(o[0] if isinstance(o, tuple) else o))
             for layer in model.model.layers]
    with torch.no_grad():
        logits = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"]).logits
    for h in hooks:
        h.remove()
    labels = forget["labels"][:, 1:]
    mask = labels != IGNORE_INDEX
    n = int(mask.sum())

    def ce(lg):
        return torch.nn.functional.cross_entropy(lg[:, :-1][mask], labels[mask], reduction="sum").item()

    with torch.no_grad():
        lens = [ce(model.lm_head(model.model.norm(h))) for h in outs[:-1]] + [ce(logits)]
    g = repnoise.generator_for(forget, 5)
    mmds = [mmd_by_hand(h[:, :-1][mask], torch.randn(h[:, :-1][mask].shape, generator=g)) for h in outs]
    share = n / totals["forget"]
    with torch.no_grad():
        retain_ce = token_ce(model, retain)
    expected = (2.0 * retain_ce / totals["retain"]
                + share * (0.3 * sum(mmds) / 3 - 0.7 * math.log1p(sum(lens) / 3 / n)))
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    assert parts["forget"].item() == pytest.approx(lens[-1], rel=1e-5)
    assert all(m > 0 for m in mmds)  # the hidden states are not noise yet: the term has something to push


def token_ce(model, rows):
    from distill.objective import token_cross_entropy

    logits = model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"]).logits
    return token_cross_entropy(logits, rows["labels"]).item()
