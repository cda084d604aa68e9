"""Next-token cross-entropy (nats per token) and top-1 accuracy of a model on held-out text rows.

The rows are sharded over ranks; every rank makes the same number of forward calls (the short shards
repeat a row that is not counted), which ZeRO-3 needs, and the sums are all-reduced in float64, so the
result is the same on any world size and identical on every rank. Call on all ranks together.
"""

from __future__ import annotations

import torch

from distill import dist
from distill.data import IGNORE_INDEX, collate, to_device


@torch.no_grad()
def cross_entropy_and_accuracy(model, rows, pad_id: int, batch_size: int = 8, rank: int = 0, world: int = 1,
                               device="cpu") -> dict:
    """{"ce": mean nats per target token, "top1": share of targets that are the argmax, "tokens": count}."""
    sums = torch.zeros(3, dtype=torch.float64)  # ce sum, correct, targets
    mine = list(zip(*dist.equal_shards(list(range(len(rows))), rank, world)))
    was_training = model.training
    model.eval()
    for start in range(0, len(mine), batch_size):
        chunk = mine[start:start + batch_size]
        batch = to_device(collate([rows[i] for i, _ in chunk], pad_id), device)
        labels = batch["labels"][:, 1:].clone()
        labels[~torch.tensor([use for _, use in chunk], device=labels.device)] = IGNORE_INDEX
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        mask = labels != IGNORE_INDEX
        target = labels.clamp(min=0)  # ignored positions are masked out below; no negative index is gathered
        logp = torch.log_softmax(logits, -1)
        nll = -logp.gather(-1, target[..., None])[..., 0]
        sums[0] += nll[mask].double().sum().cpu()
        sums[1] += (logits.argmax(-1) == target)[mask].double().sum().cpu()
        sums[2] += mask.sum().double().cpu()
    model.train(was_training)
    dist.all_reduce_sum(sums)
    ce, correct, n = sums.tolist()
    return {"ce": ce / n if n else None, "top1": correct / n if n else None, "tokens": int(n)}
