"""Which records a reader yields, in which order: a pure function of (plan, seed, start, split).

The global stream. Epoch e lists every record once: shards in an order seeded by (seed, e); inside
a shard, its chunks in an order seeded by (seed, e, shard) and inside a chunk its records in an order
seeded by (seed, e, shard, chunk). Position p of the stream is record order_e[p - e*N]. Keeping a
chunk's records together lets each reader decode only the chunks it uses.

The split. A reader is one (rank, data-loader worker) of world_size x num_workers. From position
`start` on, the stream is cut into blocks of `block` positions; block j goes to rank j % world_size
and, on that rank, to worker (j // world_size) % num_workers. With block = micro-batch size m and a
global batch G (a multiple of m x world_size), optimizer step s reads positions [s*G, (s+1)*G) and
rank r's micro-batch a is positions s*G + a*W*m + r*m + [0, m): the engine's own layout
(`distill.data`). So the global batch is the same records on any world size, a DataLoader that
round-robins over its workers yields the rank's blocks in order, and a resumed run passes
start = samples seen (a multiple of block x world_size, so each rank continues its own stream).
Readers of every world size together cover each record once per epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from distill.cache.manifest import CachePlan


@dataclass(frozen=True)
class Split:
    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1
    block: int = 1

    def __post_init__(self):
        if not (0 <= self.rank < self.world_size and 0 <= self.worker < self.num_workers and self.block >= 1):
            raise ValueError(f"invalid reader split {self}")

    @property
    def slot(self) -> int:
        return self.rank + self.world_size * self.worker

    @property
    def slots(self) -> int:
        return self.world_size * self.num_workers

    def owns(self, positions: np.ndarray, start: int) -> np.ndarray:
        """Boolean mask over stream positions (all >= start): which ones this reader yields."""
        return ((positions - start) // self.block) % self.slots == self.slot


class StreamOrder:
    def __init__(self, plan: CachePlan, seed: int = 0, shuffle: bool = True):
        self.plan, self.seed, self.shuffle = plan, seed, shuffle

    def shard_order(self, epoch: int) -> np.ndarray:
        n = self.plan.num_shards
        return np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)

    def shard_records(self, epoch: int, shard: int) -> np.ndarray:
        """(R_j,) int64 record indices of shard `shard` in stream order for `epoch`."""
        records = self.plan.shard_records(shard)
        c = self.plan.chunk_records
        chunks = [np.arange(lo, min(lo + c, records.stop)) for lo in range(records.start, records.stop, c)]
        if not self.shuffle:
            return np.concatenate(chunks)
        rng = np.random.default_rng([self.seed, epoch, shard])
        return np.concatenate([np.random.default_rng([self.seed, epoch, shard, int(i)]).permutation(chunks[i])
                               for i in rng.permutation(len(chunks))])

    def walk(self, split: Split, start: int = 0, epochs: int | None = 1) -> Iterator[tuple[int, np.ndarray]]:
        """(shard, records this reader takes from it, in stream order) from position `start` on.

        Shards this reader takes nothing from are left out, so they are never read."""
        n = self.plan.records
        epoch = start // n
        while epochs is None or epoch < epochs:
            base = epoch * n
            for shard in self.shard_order(epoch):
                size = len(self.plan.shard_records(int(shard)))
                if base + size > start:
                    positions = np.arange(max(base, start), base + size)
                    mine = positions[split.owns(positions, start)]
                    if mine.size:
                        yield int(shard), self.shard_records(epoch, int(shard))[mine - base]
                base += size
            epoch += 1
