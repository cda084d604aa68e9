"""Distillation on outputs: forward KL(teacher || student) at every non-padding position.

Both models predict the next token at each position, so the teacher's distribution at position t is
the target for the student's at position t (no label is needed, and the last position counts too).
The loss math lives in `distill.losses`; this module only feeds it. When teacher and student vocab
sizes differ by padding (same tokenizer, e.g. 256,000 vs 262,144 rows), both are compared over the
tokenizer's ids only: ids past it are padding that no text ever contains.
"""

from __future__ import annotations

import torch

from distill.losses import kl_loss


class OnlineDistillObjective:
    """Dense targets from a frozen teacher run alongside the student (every rank, same batch)."""

    def __init__(self, teacher, vocab: int, temperature: float = 1.0):
        self.teacher, self.vocab, self.temperature = teacher, vocab, temperature

    def count(self, batch: dict) -> dict[str, int]:
        return {"kd": int(batch["attention_mask"].sum())}

    def __call__(self, model, batch, totals):
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        student = model(**inputs).logits[..., : self.vocab]
        with torch.no_grad():
            teacher = self.teacher(**inputs).logits[..., : self.vocab]
        mask = batch["attention_mask"].reshape(-1).bool()
        # The model's forward already applied Gemma-2's softcap, so none here; not in place, because
        # the softcap's backward still needs the logits it produced.
        loss_sum, _ = kl_loss(student.reshape(-1, self.vocab), teacher.reshape(-1, self.vocab), kind="dense",
                              temperature=self.temperature, mask=mask, inplace=False)
        return loss_sum / max(totals["kd"], 1.0), {"kd": loss_sum.detach()}


class CachedDistillObjective:
    """Sparse targets streamed from a teacher-logit cache: top-k with the exact tail, or sampled."""

    FIELDS = {"topk": ("topk_ids", "topk_logprobs"), "sampled": ("sample_ids", "sample_weights")}

    def __init__(self, kind: str, vocab: int, temperature: float = 1.0):
        self.kind, self.vocab, self.temperature = kind, vocab, temperature

    def count(self, batch: dict) -> dict[str, int]:
        return {"kd": int(batch["attention_mask"].sum())}

    def __call__(self, model, batch, totals):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        student = logits[..., : self.vocab].reshape(-1, self.vocab)
        ids_key, values_key = self.FIELDS[self.kind]
        k = batch[ids_key].shape[-1]
        target = (batch[ids_key].reshape(-1, k), batch[values_key].reshape(-1, k))
        mask = batch["attention_mask"].reshape(-1).bool()
        loss_sum, _ = kl_loss(student, target, kind=self.kind, temperature=self.temperature, mask=mask,
                              inplace=False)
        return loss_sum / max(totals["kd"], 1.0), {"kd": loss_sum.detach()}
