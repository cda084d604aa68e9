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
