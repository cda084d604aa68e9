"""Distillation on outputs: forward KL(teacher || student) at every non-padding position.

Both models predict the next token at each position, so the teacher's distribution at position t is
the target for the student's at position t (no label is needed, and the last position counts too).
The loss math lives in `distill.losses`; this module only feeds it, by default through the fused-linear
head on the student's hidden states (`StudentWithKLHead`), or on materialised logits (fused=False).
When teacher and student vocab sizes differ by padding (same tokenizer, e.g. 256,000 vs 262,144 rows),
both are compared over the tokenizer's ids only: ids past it are padding that no text ever contains.
"""

from __future__ import annotations

import torch

from distill.losses import FusedLinearKL, kl_loss


def output_head(causal_lm, kind: str, vocab: int, temperature: float = 1.0) -> FusedLinearKL:
    """A fused-linear head sharing `causal_lm`'s output matrix (first `vocab` rows), with its final softcap."""
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    return FusedLinearKL(causal_lm.get_output_embeddings().weight, kind=kind, temperature=temperature,
                         softcap=softcap, vocab=vocab)


def final_hidden(causal_lm, input_ids, attention_mask) -> torch.Tensor:
    """The decoder's final hidden states (B, T, H): the causal LM without its output matrix."""
    decoder = getattr(causal_lm, causal_lm.base_model_prefix)
    return decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class StudentWithKLHead(torch.nn.Module):
    """A causal LM and the fused-linear KL head that shares its output matrix, trained as one module.

    The loss runs on the decoder's final hidden states and never holds the (tokens x vocab) logits:
    under ZeRO-3 the head, as a module of the engine, gets the whole (tied) matrix gathered for its
    forward and backward. `causal_lm` is what is evaluated and exported (`distill.engine.hf_model`).
    """

    def __init__(self, causal_lm, kind: str, vocab: int, temperature: float = 1.0):
        super().__init__()
        self.causal_lm = causal_lm
        self.head = output_head(causal_lm, kind, vocab, temperature)

    def forward(self, input_ids, attention_mask, target, mask):
        hidden = final_hidden(self.causal_lm, input_ids, attention_mask)
        return self.head(hidden.flatten(0, 1), target, mask)


class OnlineDistillObjective:
    """Dense targets from a frozen teacher run alongside the student (every rank, same batch)."""

    kind = "dense"

    def __init__(self, teacher, vocab: int, temperature: float = 1.0, fused: bool = True):
        self.teacher, self.vocab, self.temperature, self.fused = teacher, vocab, temperature, fused

    def wrap(self, causal_lm):
        return wrap_student(self, causal_lm)

    def count(self, batch: dict) -> dict[str, int]:
        return {"kd": int(batch["attention_mask"].sum())}

    def __call__(self, model, batch, totals):
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with torch.no_grad():
            teacher = self.teacher(**inputs).logits[..., : self.vocab].reshape(-1, self.vocab)
        mask = batch["attention_mask"].reshape(-1).bool()
        return student_loss(model, inputs, teacher, mask, totals, self)


class CachedDistillObjective:
    """Sparse targets streamed from a teacher-logit cache: top-k with the exact tail, or sampled."""

    FIELDS = {"topk": ("topk_ids", "topk_logprobs"), "sampled": ("sample_ids", "sample_weights")}

    def __init__(self, kind: str, vocab: int, temperature: float = 1.0, fused: bool = True):
        self.kind, self.vocab, self.temperature, self.fused = kind, vocab, temperature, fused

    def wrap(self, causal_lm):
        return wrap_student(self, causal_lm)

    def count(self, batch: dict) -> dict[str, int]:
        return {"kd": int(batch["attention_mask"].sum())}

    def __call__(self, model, batch, totals):
        ids_key, values_key = self.FIELDS[self.kind]
        k = batch[ids_key].shape[-1]
        target = (batch[ids_key].reshape(-1, k), batch[values_key].reshape(-1, k))
        mask = batch["attention_mask"].reshape(-1).bool()
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return student_loss(model, inputs, target, mask, totals, self)


def wrap_student(objective, causal_lm):
    """The student as the objective trains it: with the fused KL head of its kind, or bare (logits)."""
    if not objective.fused:
        return causal_lm
    return StudentWithKLHead(causal_lm, objective.kind, objective.vocab, objective.temperature)


def student_loss(model, inputs: dict, target, mask, totals, objective):
    """This rank's share of the global mean KL: through the fused head (a `StudentWithKLHead` engine), or
    on the model's materialised logits."""
    if objective.fused:
        loss_sum, _ = model(**inputs, target=target, mask=mask)
    else:
        student = model(**inputs).logits[..., : objective.vocab].reshape(-1, objective.vocab)
        # The model's forward already applied Gemma-2's softcap, so none here; not in place, because
        # the softcap's backward still needs the logits it produced.
        loss_sum, _ = kl_loss(student, target, kind=objective.kind, temperature=objective.temperature, mask=mask,
                              inplace=False)
    return loss_sum / max(totals["kd"], 1.0), {"kd": loss_sum.detach()}
