"""A cache as the Trainer's batch source (see `distill.batches`): this rank's records with their targets,
in the plan's layout, from the global position a (resumed) run starts at.

Made on every rank, it first checks every shard's sha256 (the ranks share the hashing, see
`reader.verify_cache`), so a damaged cache is refused before the first step, naming each bad shard;
verify=False skips that for a cache verified already."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from distill.cache.reader import CacheReader, verify_cache
from distill.data import GlobalBatchPlan, stack_records


class CacheBatches:
    """A cache's records with their targets; `manifest` is the opened (and checked) cache's."""

    def __init__(self, cache_dir: str | Path, manifest, rank: int, world_size: int, seed: int, verify: bool = True):
        self.cache_dir, self.manifest = Path(cache_dir), manifest
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self._records = None
        if verify:
            self._verify()

    def _verify(self) -> None:
        shards = self.manifest.shards
        gib = sum(s.bytes for s in shards) / 2 ** 30
        if self.rank == 0:
            print(f"verifying the sha256 of {len(shards)} cache shards ({gib:.2f} GiB) on {self.world_size} "
                  "rank(s) (--no-verify-cache skips this)", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        verify_cache(self.cache_dir, self.manifest, self.rank, self.world_size)
        if self.rank == 0:
            print(f"cache verified in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    def __len__(self) -> int:
        return self.manifest.plan.records

    def micro_batch(self, plan: GlobalBatchPlan, step: int, accum: int) -> dict:
        if self._records is None:  # opened at the (resumed) step's global position
            reader = CacheReader(self.cache_dir, rank=self.rank, world_size=self.world_size, block=plan.micro_batch,
                                 seed=self.seed, start=plan.samples_seen(step), epochs=None, verify=False)
            self._records = iter(reader)
        return stack_records([next(self._records) for _ in range(plan.micro_batch)])
