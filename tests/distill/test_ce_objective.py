"""Cross-entropy through the fused-linear head equals the model's own logits path: loss and gradients."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from distill.ce_objective import FusedCausalLMObjective, causal_lm_loss, uses_fused_head, with_ce_head
from distill.data import IGNORE_INDEX
from distill.models import build_model
from distill.objective import CausalLMObjective
from unlearn.tasks.tokenizer import build_char_tokenizer


def models():
    tok = build_char_tokenizer()
    torch.manual_seed(0)
    gemma = build_model("gemma2-tiny", tok)
    gemma.config.final_logit_softcapping = 1.0  # a softcap that bites: the fused path must apply it too
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=90, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    return {"gemma2": gemma, "llama": llama}


@pytest.mark.parametrize("family", ["gemma2", "llama"])
def test_fused_cross_entropy_matches_the_logits_path(family):
    model = models()[family].float()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 77, (3, 12), generator=g)
    labels = ids.clone()
    labels[0, :4] = IGNORE_INDEX  # an unlabelled prompt
    attention = torch.ones_like(ids)
    attention[2, 9:] = 0  # right padding
    labels[2, 9:] = IGNORE_INDEX
    batch = {"input_ids": ids, "labels": labels, "attention_mask": attention}
    plain = CausalLMObjective()
    totals = plain.count(batch)
    assert FusedCausalLMObjective().count(batch) == totals
    loss, parts = plain(model, batch, totals)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    wrapped = with_ce_head(model)
    fused_loss, fused_parts = FusedCausalLMObjective()(wrapped, batch, totals)
    fused_loss.backward()
    assert fused_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    assert fused_parts["ce"].item() == pytest.approx(parts["ce"].item(), rel=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_auto_fuses_from_a_large_vocabulary_up():
    assert not uses_fused_head("auto", 77) and uses_fused_head("auto", 256_000)
    assert uses_fused_head("fused", 77) and not uses_fused_head("logits", 256_000)
    objective = causal_lm_loss("auto", 77)
    assert isinstance(objective, CausalLMObjective) and objective.wrap("m") == "m"
    assert isinstance(causal_lm_loss("fused", 77), FusedCausalLMObjective)
    with pytest.raises(ValueError, match="loss head must be one of"):
        uses_fused_head("dense", 77)
