"""Where a training step's micro-batches come from: a batch source the Trainer reads, never a callback.

Both sources serve the same layout, the one `distill.data.GlobalBatchPlan` fixes: step s consumes the
global stream positions [s*G, (s+1)*G), split into micro-batches by global rank and accumulation step.

- `MapBatches`: a map-style dataset (pretraining rows, unlearning pairs, attack rows), read at the
  plan's indices and padded by `distill.data.fetch`;
- `distill.cache.CacheBatches`: a teacher-logit cache streamed from disk (blocks of one micro-batch,
  round-robin over ranks), opened lazily at the position a resumed run starts from.
"""

from __future__ import annotations

from distill.data import GlobalBatchPlan, fetch


class MapBatches:
    def __init__(self, dataset, pad_token_id: int):
        self.dataset, self.pad_token_id = dataset, pad_token_id

    def __len__(self) -> int:
        return len(self.dataset)

    def micro_batch(self, plan: GlobalBatchPlan, step: int, accum: int) -> dict:
        return fetch(self.dataset, plan.micro_indices(step, accum), self.pad_token_id)
