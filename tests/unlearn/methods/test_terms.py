"""Every unlearning method through the fused head equals the same method on materialised logits: loss,
logged parts and the gradient of every parameter, on a Gemma-2 (softcap) and a Llama (untied head)."""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from distill.data import fetch
from distill.models import build_model
from unlearn.methods import build_objective, get_method, parse_hparams
from unlearn.methods.terms import FusedTerms, LogitTerms, TermsModel
from unlearn.tasks.forget_retain import ForgetRetainDataset
from unlearn.tasks.tokenizer import build_char_tokenizer

CASES = [("graddiff", []), ("graddiff", ["retain_loss=kl"]), ("maxent", []), ("npo", []),
         ("simnpo", ["beta=2.0", "delta=0.5"]), ("rmu", ["layer=1", "trainable_layers=0,1"]), ("sam", []),
         ("repnoise", ["beta=0.5"])]


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def batch(tok):
    return fetch(ForgetRetainDataset(tok, "*,/", "+,-", num_items=6, seed=0), list(range(6)), tok.pad_token_id)


def gemma(tok, seed):
    torch.manual_seed(seed)
    model = build_model("gemma2-tiny", tok)
    model.config.final_logit_softcapping = 2.0  # a softcap that bites on these logits
    return model


def llama(tok, seed):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok) + 19, hidden_size=64, intermediate_size=128,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        tie_word_embeddings=False, pad_token_id=tok.pad_token_id))


def run(method_name, overrides, base, reference, batch, fused):
    method = get_method(method_name)
    hp = parse_hparams(method, overrides)
    model = TermsModel(copy.deepcopy(base), fused)
    ref = TermsModel(reference, fused)
    ref.requires_grad_(False)
    obj = build_objective(method, hp, ref, base.config)
    obj.select_trainable(model.causal_lm)
    totals = {k: float(v) for k, v in obj.count(batch).items()}
    loss, parts = obj(model, batch, totals)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.causal_lm.named_parameters() if p.grad is not None}
    return loss.detach(), {k: v.detach() for k, v in parts.items()}, grads


@pytest.mark.parametrize("family", [gemma, llama], ids=["gemma2", "llama"])
@pytest.mark.parametrize("name,overrides", CASES, ids=[f"{n}{'-' + o[0] if o else ''}" for n, o in CASES])
def test_fused_terms_equal_the_logits(tok, batch, family, name, overrides):
    base, reference = family(tok, 0), family(tok, 1)  # a reference unlike the model: the KL term is not 0
    a_loss, a_parts, a_grads = run(name, overrides, base, reference, batch, fused=False)
    b_loss, b_parts, b_grads = run(name, overrides, base, reference, batch, fused=True)
    torch.testing.assert_close(b_loss, a_loss, rtol=1e-5, atol=1e-6)
    assert a_parts.keys() == b_parts.keys()
    for key in a_parts:
        torch.testing.assert_close(b_parts[key], a_parts[key], rtol=1e-5, atol=1e-5)
    assert a_grads.keys() == b_grads.keys() and a_grads
    for key, grad in a_grads.items():
        scale = float(grad.abs().max())
        torch.testing.assert_close(b_grads[key], grad, rtol=1e-4, atol=1e-5 * max(scale, 1e-3)), key


def test_sequence_loss_gradient_is_that_of_the_sequence_function(tok, batch):
    """The fused two-pass sequence loss: value and gradient of a nonlinear function of each row's summed
    log-probs, against autograd through the logits."""
    base = gemma(tok, 0)
    rows = batch["forget"]
    labels = rows["labels"]

    def loss_of(s, n):
        return (torch.sin(s) * n.clamp(min=1) ** 0.5).sum()

    results = []
    for fused in (False, True):
        model = TermsModel(copy.deepcopy(base), fused)
        value = model(rows["input_ids"], rows["attention_mask"], lambda t: t.sequence_loss(labels, loss_of))
        value.backward()
        results.append((value.detach(), model.causal_lm.model.embed_tokens.weight.grad))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    # The absolute tolerance scales with the gradient, as for the terms above: float32 sums in another order
    # (chunks against whole logits) differ by a few ulps of the largest entries (scale ~24 here; a fixed 1e-6,
    # under one ulp at that scale, failed on another CPU by 1.2e-5).
    scale = float(results[0][1].abs().max())
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-5 * scale)
    assert scale > 1e-4


def test_the_fused_path_never_builds_the_logits(tok, batch, monkeypatch):
    """With the fused head, the model's lm_head (Llama: untied) is never called: the logits are not made."""
    model = TermsModel(llama(tok, 0), fused=True)
    seen = []
    model.causal_lm.lm_head.register_forward_hook(lambda *a: seen.append(1))
    rows = batch["forget"]
    kinds = []

    def nll_then_kl(t):
        kinds.append(type(t))
        return t.nll(rows["labels"]) + t.uniform_kl(rows["labels"])

    model(rows["input_ids"], rows["attention_mask"], nll_then_kl).backward()
    assert kinds == [FusedTerms] and not seen
    plain = TermsModel(llama(tok, 0), fused=False)
    assert type(plain(rows["input_ids"], rows["attention_mask"], lambda t: t)) is LogitTerms
