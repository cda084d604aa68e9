"""Where a training step's micro-batches come from: a batch source the Trainer reads, never a callback.

Both sources serve the same layout, the one `distill.data.GlobalBatchPlan` fixes: step s consumes the
global stream positions [s*G, (s+1)*G), split into micro-batches by global rank and accumulation step.

- `MapBatches`: a map-style dataset (pretraining rows, unlearning pairs, attack rows), read at the
  plan's indices and padded by `distill.data.fetch`;
- `CacheBatches`: a teacher-logit cache streamed from disk by `distill.cache.CacheReader` (blocks of one
  micro-batch, round-robin over ranks), opened lazily at the position a resumed run starts from.
"""

from __future__ import annotations

from pathlib import Path

from distill.data import GlobalBatchPlan, fetch, stack_records


class MapBatches:
    def __init__(self, dataset, pad_token_id: int):
        self.dataset, self.pad_token_id = dataset, pad_token_id

    def __len__(self) -> int:
        return len(self.dataset)

    def micro_batch(self, plan: GlobalBatchPlan, step: int, accum: int) -> dict:
        return fetch(self.dataset, plan.micro_indices(step, accum), self.pad_token_id)


class CacheBatches:
    """A cache's records with their targets; `manifest` is the opened (and checked) cache's."""

    def __init__(self, cache_dir: str | Path, manifest, rank: int, world_size: int, seed: int):
        self.cache_dir, self.manifest = Path(cache_dir), manifest
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self._records = None

    def __len__(self) -> int:
        return self.manifest.plan.records

    def micro_batch(self, plan: GlobalBatchPlan, step: int, accum: int) -> dict:
        if self._records is None:  # opened at the (resumed) step's global position
            from distill.cache import CacheReader

            reader = CacheReader(self.cache_dir, rank=self.rank, world_size=self.world_size, block=plan.micro_batch,
                                 seed=self.seed, start=plan.samples_seen(step), epochs=None)
            self._records = iter(reader)
        return stack_records([next(self._records) for _ in range(plan.micro_batch)])
