"""Methods on a real (tiny, random) Gemma-2: what trains, what stays frozen, bad settings."""

import pytest
import torch

from distill.data import fetch
from distill.errors import UserError
from distill.models import build_model
from unlearn.methods import build_objective, get_method, parse_hparams, rmu
from unlearn.methods.common import capture_output, decoder_layers
from unlearn.methods.terms import TermsModel
from unlearn.tasks.forget_retain import ForgetRetainDataset
from unlearn.tasks.tokenizer import build_char_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def batch(tok):
    ds = ForgetRetainDataset(tok, "*,/", "+,-", num_items=8, seed=0)
    return fetch(ds, list(range(8)), tok.pad_token_id)


def tiny(tok, seed):
    """A random gemma2-tiny, called with terms= as the unlearning stage wraps it."""
    torch.manual_seed(seed)
    return TermsModel(build_model("gemma2-tiny", tok), fused=False)


def totals_of(obj, batch):
    return {k: float(v) for k, v in obj.count(batch).items()}


def test_rmu_trains_only_the_chosen_down_projections(tok, batch):
    model, ref = tiny(tok, 0), tiny(tok, 0)
    ref.requires_grad_(False)
    obj = build_objective(rmu, rmu.Hparams(layer=2, trainable_layers="1,2"), ref, model.causal_lm.config)
    obj.select_trainable(model)
    loss, _ = obj(model, batch, totals_of(obj, batch))
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {"causal_lm.model.layers.1.mlp.down_proj.weight",
                         "causal_lm.model.layers.2.mlp.down_proj.weight"}
    assert all(p.grad is None for p in ref.parameters())


def test_rmu_forget_term_equals_hidden_states_by_another_route(tok, batch):
    model = tiny(tok, 0)
    hp = rmu.Hparams(layer=1, coeff=5.0)
    obj = build_objective(rmu, hp, tiny(tok, 0), model.causal_lm.config)
    rows = batch["forget"]
    _, parts = obj.forget_loss(model, rows, {"forget": 1.0})
    hidden = model.causal_lm(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"],
                             output_hidden_states=True).hidden_states[2][:, :-1]  # [0] is the embedding
    mask = rows["labels"][:, 1:] != -100
    expected = (((hidden - obj.target) ** 2).mean(-1) * mask).sum()
    assert parts["forget"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert obj.target.norm().item() == pytest.approx(5.0)


def test_hooks_are_removed_even_when_the_forward_fails(tok):
    model = tiny(tok, 0)
    layer = decoder_layers(model)[0]
    with pytest.raises(IndexError), capture_output(layer):
        model.causal_lm(input_ids=torch.tensor([[1, 2, 999]]))  # id past the vocabulary
    assert not layer._forward_hooks


@pytest.mark.parametrize("name", ["npo", "graddiff"])
def test_reference_gets_no_gradient_and_is_not_modified(tok, batch, name):
    method = get_method(name)
    hp = parse_hparams(method, ["retain_loss=kl"] if name == "graddiff" else [])
    model, ref = tiny(tok, 0), tiny(tok, 1)
    ref.requires_grad_(False)
    before = {n: p.clone() for n, p in ref.state_dict().items()}
    obj = build_objective(method, hp, ref, model.causal_lm.config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        loss, _ = obj(model, batch, totals_of(obj, batch))
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert all(p.grad is None for p in ref.parameters())
    assert all(torch.equal(before[n], p) for n, p in ref.state_dict().items())


def test_rmu_layer_beyond_the_depth_is_named(tok):
    config = tiny(tok, 0).causal_lm.config
    with pytest.raises(UserError, match=r"RMU layer index 7 is outside the model's 4 decoder layers"):
        build_objective(rmu, rmu.Hparams(layer=7), tiny(tok, 0), config)


def test_unknown_method_and_settings(tok):
    with pytest.raises(UserError, match=r"unknown unlearning method 'forgetall'.*maxent"):
        get_method("forgetall")
    with pytest.raises(UserError, match=r"--hp alpha: maxent has no such setting"):
        parse_hparams(get_method("maxent"), ["alpha=3"])
    with pytest.raises(UserError, match=r"--hp beta=high: expected a float"):
        parse_hparams(get_method("npo"), ["beta=high"])


def test_forget_and_retain_must_be_disjoint_and_non_empty(tok):
    with pytest.raises(ValueError, match=r"overlap \(\* /\)"):
        ForgetRetainDataset(tok, "*,/", "*,/", num_items=4, seed=0)
    with pytest.raises(ValueError):
        ForgetRetainDataset(tok, "", "+", num_items=4, seed=0)
    with pytest.raises(ValueError, match="num_items"):
        ForgetRetainDataset(tok, "*", "+", num_items=0, seed=0)
