"""Deterministic data order, owned by global rank, independent of the world size.

The run reads one global stream of sample indices: position k of the stream is sample
`perm_e[k mod L]` of a dataset of length L, where e = k div L is the epoch and perm_e a permutation
seeded by (seed, e). Optimizer step s consumes stream positions [s*G, (s+1)*G) for a global batch G.
Within that slice, accumulation step a on rank r takes the m positions starting at
a*(W*m) + r*m. The union over ranks and accumulation steps is the same global batch whatever the
world size W, so 1 rank and 2 ranks see the same samples per step; the data position of a resumed
run is simply its step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE_INDEX = -100


class GlobalBatchPlan:
    def __init__(self, dataset_len: int, global_batch: int, micro_batch: int, world_size: int, rank: int,
                 seed: int, shuffle: bool = True):
        if dataset_len < 1:
            raise ValueError(f"dataset is empty (length {dataset_len})")
        self.length = dataset_len
        self.global_batch = global_batch
        self.micro_batch = micro_batch
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.grad_accum = global_batch // (micro_batch * world_size)
        self._perm_epoch = -1
        self._perm: torch.Tensor | None = None

    def _sample_at(self, k: int) -> int:
        epoch, offset = divmod(k, self.length)
        if not self.shuffle:
            return offset
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.length, generator=g)
            self._perm_epoch = epoch
        return int(self._perm[offset])

    def micro_indices(self, step: int, accum: int) -> list[int]:
        """Dataset indices of this rank's micro-batch `accum` of optimizer step `step`."""
        start = step * self.global_batch + accum * self.world_size * self.micro_batch + self.rank * self.micro_batch
        return [self._sample_at(k) for k in range(start, start + self.micro_batch)]

    def samples_seen(self, step: int) -> int:
        return step * self.global_batch


def collate(items: Sequence[dict], pad_id: int) -> dict:
    """Right-pad a list of {"input_ids", "labels"[, ...]} rows into a batch with an attention mask.

    Padding positions get label IGNORE_INDEX so they never count as targets.
    """
    length = max(len(it["input_ids"]) for it in items)
    batch = {"input_ids": torch.full((len(items), length), pad_id, dtype=torch.long),
             "labels": torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long),
             "attention_mask": torch.zeros((len(items), length), dtype=torch.long)}
    for i, it in enumerate(items):
        n = len(it["input_ids"])
        batch["input_ids"][i, :n] = torch.as_tensor(it["input_ids"])
        batch["labels"][i, :n] = torch.as_tensor(it.get("labels", it["input_ids"]))
        batch["attention_mask"][i, :n] = 1
    return batch


def fetch(dataset, indices: Sequence[int], pad_id: int) -> dict:
    """Collate dataset items: flat rows, or dicts of named streams (e.g. {"forget": row, "retain": row})."""
    items = [dataset[i] for i in indices]
    if "input_ids" in items[0]:
        return collate(items, pad_id)
    return {name: collate([it[name] for it in items], pad_id) for name in items[0]}


def to_device(batch: dict, device) -> dict:
    return {k: to_device(v, device) if isinstance(v, dict) else v.to(device) for k, v in batch.items()}


def stack_records(records: Sequence[dict]) -> dict:
    """Batch fixed-length stream records (e.g. cache records): stack every tensor field; no padding,
    so every position is attended to."""
    batch = {k: torch.stack([r[k] for r in records]) for k, v in records[0].items() if isinstance(v, torch.Tensor)}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    return batch
