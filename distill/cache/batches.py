"""A cache as the Trainer's batch source (see `distill.batches`): this rank's records with their targets,
in the plan's layout, from the global position a (resumed) run starts at."""

from __future__ import annotations

from pathlib import Path

from distill.cache.reader import CacheReader
from distill.data import GlobalBatchPlan, stack_records


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
            reader = CacheReader(self.cache_dir, rank=self.rank, world_size=self.world_size, block=plan.micro_batch,
                                 seed=self.seed, start=plan.samples_seen(step), epochs=None)
            self._records = iter(reader)
        return stack_records([next(self._records) for _ in range(plan.micro_batch)])
