"""The next-token terms unlearning methods are made of, on materialised logits or through the fused head.

A method never reads `.logits`. It calls the (wrapped) model with a function of the forward's terms,

    total = model(input_ids=..., attention_mask=..., terms=lambda t: t.nll(labels))

and `t` is a `LogitTerms` (the model's logits, as before; the arithmetic testbed's 77 tokens) or a
`FusedTerms` (the decoder's final hidden states and a fused-linear head sharing the output matrix: no
(tokens x vocab) tensor is ever held, 8.4 GB per tensor at 256k vocabulary and 4 x 2,048 tokens). Both
give the same values and gradients. The function runs inside the wrapper's forward, so under ZeRO-3
the head's matrix is gathered for it like any module's weight.

Labels follow `distill.data`: position t predicts labels[:, t + 1]; -100 is not counted. Per-position
outputs are (B, T - 1).
"""

from __future__ import annotations

import math

import torch

from distill.ce_objective import next_token_targets
from distill.data import IGNORE_INDEX
from distill.engine import hf_model
from distill.kd_objective import final_hidden, output_head
from distill.losses import FusedLinearKL
from distill.losses.targets import ProjectedLogits
from distill.objective import token_cross_entropy


def _next_mask(labels: torch.Tensor) -> torch.Tensor:
    return labels[:, 1:] != IGNORE_INDEX


class LogitTerms:
    """Terms on the model's materialised logits (B, T, V)."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def logprobs(self, labels, grad: bool = False) -> torch.Tensor:
        """log p(next label) (B, T - 1), 0 where not counted."""
        targets, mask = labels[:, 1:], _next_mask(labels)
        logp = torch.log_softmax(self.logits[:, :-1].float(), dim=-1)
        # Ignored labels are replaced before the gather: a negative index would wrap around the vocabulary.
        picked = logp.gather(-1, targets.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1) * mask
        return picked if grad else picked.detach()

    def nll(self, labels, weights: torch.Tensor | None = None) -> torch.Tensor:
        """sum over counted positions of weights * -log p(next label) (weights (B, T - 1), default 1)."""
        if weights is None:
            return token_cross_entropy(self.logits, labels)
        return -(self.logprobs(labels, grad=True) * weights).sum()

    def sequence_loss(self, labels, loss_of) -> torch.Tensor:
        """loss_of(S, n) for S (B,) the rows' summed log-probs and n (B,) their counted positions."""
        return loss_of(self.logprobs(labels, grad=True).sum(-1), _next_mask(labels).sum(-1))

    def uniform_kl(self, labels) -> torch.Tensor:
        """sum over counted positions of KL(Uniform || p) = -log V - mean_v log p_v."""
        logp = torch.log_softmax(self.logits[:, :-1].float(), dim=-1)
        return ((-math.log(logp.size(-1)) - logp.mean(-1)) * _next_mask(labels)).sum()

    def as_teacher(self):
        """What `kl_from` of a model's terms needs of this (frozen) model: its logits."""
        return self.logits.detach()

    def kl_from(self, teacher_logits, labels, reference=None) -> torch.Tensor:
        """sum over counted positions of KL(teacher || model), teacher from a reference's `as_teacher`."""
        ref_logp = torch.log_softmax(teacher_logits[:, :-1].float(), -1)
        logp = torch.log_softmax(self.logits[:, :-1].float(), -1)
        return ((ref_logp.exp() * (ref_logp - logp)).sum(-1) * _next_mask(labels)).sum()


class FusedTerms:
    """The same terms from the final hidden states (B, T, H) through a `FusedLinearKL` head."""

    def __init__(self, hidden: torch.Tensor, head: FusedLinearKL):
        self.hidden, self.head = hidden, head

    def logprobs(self, labels) -> torch.Tensor:
        target, mask = next_token_targets(labels)
        with torch.no_grad():
            rows, _ = self.head(self.hidden.flatten(0, 1), target, mask, kind="sampled", reduction="none")
        return -rows.view(labels.shape)[:, :-1]

    def nll(self, labels, weights: torch.Tensor | None = None) -> torch.Tensor:
        target, mask = next_token_targets(labels)
        scale = None
        if weights is not None:
            scale = torch.cat([weights, torch.zeros_like(weights[:, :1])], 1).reshape(-1)
        loss, _ = self.head(self.hidden.flatten(0, 1), target, mask, kind="sampled", scale=scale)
        return loss

    def sequence_loss(self, labels, loss_of) -> torch.Tensor:
        """The value of loss_of(S, n) and its gradient through S, without S's graph: a first pass
        (no gradient) gives S; c = d loss_of / dS on it; a second pass, the cross-entropy weighted by -c
        per position, has the gradient sum_b c_b grad S_b. Two head passes, no (tokens x vocab) tensor."""
        s = self.logprobs(labels).sum(-1).requires_grad_()
        n = _next_mask(labels).sum(-1)
        with torch.enable_grad():
            value = loss_of(s, n)
            (coeff,) = torch.autograd.grad(value, s)
        weights = -coeff[:, None].expand(-1, labels.shape[1] - 1) * _next_mask(labels)
        surrogate = self.nll(labels, weights)
        return value.detach() + (surrogate - surrogate.detach())

    def uniform_kl(self, labels) -> torch.Tensor:
        _, mask = next_token_targets(labels)
        n, vocab = mask.numel(), self.head.vocab or self.head.weight.shape[0]
        uniform = torch.zeros((), device=self.hidden.device).expand(n, vocab)  # equal logits; no memory
        loss, _ = self.head(self.hidden.flatten(0, 1), uniform, mask, kind="dense")
        return loss

    def as_teacher(self):
        return self.hidden.detach()

    def kl_from(self, teacher_hidden, labels, reference=None) -> torch.Tensor:
        """KL(reference || model) with the reference's logits projected a chunk at a time from its hidden
        states; its output matrix is gathered for the call (a no-op outside ZeRO-3)."""
        _, mask = next_token_targets(labels)
        ref_head = terms_module(reference).head
        with gathered(ref_head.weight):
            weight = ref_head.weight if ref_head.vocab is None else ref_head.weight[: ref_head.vocab]
            target = ProjectedLogits(teacher_hidden.flatten(0, 1), weight, ref_head.softcap)
            loss, _ = self.head(self.hidden.flatten(0, 1), target, mask, kind="dense")
        return loss


def gathered(param):
    """The whole of a ZeRO-3 partitioned parameter for a block (every rank must enter it)."""
    import contextlib

    if not hasattr(param, "ds_id"):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters([param], modifier_rank=None)


class TermsModel(torch.nn.Module):
    """A causal LM called with `terms=fn`: runs it, hands fn its terms, returns fn's result.

    `fused`: the decoder alone and a fused head over every row of the output matrix (the softmax runs
    over all of them, as on the logits). `causal_lm` is what is evaluated and exported (`hf_model`)."""

    def __init__(self, causal_lm, fused: bool):
        super().__init__()
        self.causal_lm = causal_lm
        self.head = output_head(causal_lm, "sampled", causal_lm.config.vocab_size) if fused else None

    def forward(self, input_ids, attention_mask, terms):
        if self.head is None:
            return terms(LogitTerms(self.causal_lm(input_ids=input_ids, attention_mask=attention_mask).logits))
        return terms(FusedTerms(final_hidden(self.causal_lm, input_ids, attention_mask), self.head))


def terms_module(model) -> TermsModel:
    """The TermsModel inside a DeepSpeed engine, or the model itself."""
    return getattr(model, "module", model)


def causal_lm_of(model):
    """The Hugging Face causal LM inside an engine or a TermsModel."""
    return hf_model(getattr(model, "module", model))


def lens_terms(model, hidden: torch.Tensor):
    """The terms of an intermediate residual stream (B, T, H) read as if it were the last (the "logit
    lens"): through the model's final norm and output head, softcap included. Call it inside a terms
    function (under ZeRO-3 the norm and head are gathered for their calls like any module)."""
    wrapper = terms_module(model)
    lm = wrapper.causal_lm
    normed = getattr(lm, lm.base_model_prefix).norm(hidden)
    if wrapper.head is not None:
        return FusedTerms(normed, wrapper.head)
    logits = lm.get_output_embeddings()(normed)
    cap = getattr(lm.config, "final_logit_softcapping", None)
    return LogitTerms(torch.tanh(logits / cap) * cap if cap else logits)


def run_terms(model, rows: dict, fn):
    return model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"], terms=fn)
