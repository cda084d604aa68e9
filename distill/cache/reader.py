"""Stream a cache back as records for training: checked, split, ordered, prefetched.

    reader = CacheReader("runs/cache", Expected(vocab_size=..., tokenizer=..., dataset=...),
                         rank=info.rank, world_size=info.world_size, block=micro_batch, seed=seed,
                         start=samples_seen)
    loader = DataLoader(reader, batch_size=micro_batch, num_workers=2)

Each record is a dict of tensors (T = seq_len): "record" (int, the sample id), "input_ids" (T,) int64,
and for topk "topk_ids" (T, k) int64, "topk_logprobs" (T, k) float32 (normalised by the full
log-sum-exp, so the tail mass is 1 - sum exp), "logsumexp" (T,) float32; for sampled "sample_ids"
(T, N) int64 and "sample_weights" (T, N) float32. Which records, in which order: see `stream`.

Safety: the constructor checks the manifest, its fingerprints against the run's, that every shard
file exists with the manifest's size and (unless verify=False) every shard's sha256, so a wrong,
incomplete or damaged cache fails before a record is yielded. A training run verifies once, its ranks
sharing the hashing (`verify_cache`), and its readers pass verify=False. Reading: a reader reads each
shard's header and id table, then only the chunks it yields records of (see `shardfile`); each zstd
frame carries its own checksum, so damage after verification still stops the reader, naming the record.
Prefetch: a background thread reads, checks and decodes the next chunks (numpy and zstd release
the GIL, so this overlaps the training step); errors there are raised in the consuming thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from distill.cache import values
from distill.cache.errors import CacheError, RowError
from distill.cache.manifest import MANIFEST, Manifest, load_manifest, shard_path
from distill.cache.shardfile import ShardFile, file_sha256
from distill.cache.stream import Split, StreamOrder
from distill.dist import all_reduce_sum


@dataclass(frozen=True)
class Expected:
    """What the consuming run requires of a cache; None skips a check."""

    vocab_size: int | None = None  # the run's vocabulary: every cached id must be below it
    tokenizer: str | None = None  # fingerprint.tokenizer_fingerprint of the run's tokenizer
    dataset: str | None = None  # fingerprint.dataset_fingerprint of the run's dataset
    teacher: str | None = None
    mode: str | None = None
    seq_len: int | None = None


def check_expected(cache_dir: Path, manifest: Manifest, expected: Expected) -> None:
    plan, where = manifest.plan, MANIFEST
    if expected.vocab_size is not None and plan.vocab_size > expected.vocab_size:
        raise CacheError(cache_dir, f"{where}: vocab mismatch: the cache holds ids of a {plan.vocab_size}-token "
                         f"vocabulary, this run's has {expected.vocab_size}")
    for name in ("tokenizer", "dataset", "teacher", "mode", "seq_len"):
        want, have = getattr(expected, name), getattr(plan, name)
        if want is not None and want != have:
            raise CacheError(cache_dir, f"{where}: {name} mismatch: the cache was made for {have!r}, this run "
                             f"has {want!r}")
    if plan.mode == "topk" and values.levels_digest(values.value_levels(plan.value_step)) != plan.levels_sha256:
        raise CacheError(cache_dir, f"{where}: this platform rebuilds the value table of step {plan.value_step} "
                         "differently from the writer's (levels_sha256); refusing to decode")


def open_cache(cache_dir: str | Path, expected: Expected | None = None) -> Manifest:
    """Load and check a cache's manifest, its fit to the run and the presence and size of every shard."""
    cache_dir = Path(cache_dir)
    manifest = load_manifest(cache_dir)
    check_expected(cache_dir, manifest, expected or Expected())
    for entry in manifest.shards:
        path = shard_path(cache_dir, entry.name)
        if not path.is_file():
            raise CacheError(cache_dir, "the shard file is missing", shard=entry.name)
        if path.stat().st_size != entry.bytes:
            raise CacheError(cache_dir, f"the file has {path.stat().st_size} bytes, the manifest says {entry.bytes} "
                             "(truncated or replaced)", shard=entry.name)
    return manifest


def verify_cache(cache_dir: str | Path, manifest: Manifest, rank: int = 0, world_size: int = 1) -> None:
    """Check every shard's sha256 against the manifest; one CacheError names every damaged shard.

    With world_size > 1 this is a collective: rank r hashes shards r, r + W, ... and the verdicts are
    summed over the process group, so every rank raises the same error (or none) after reading 1/W of
    the cache."""
    cache_dir = Path(cache_dir)
    bad = torch.zeros(len(manifest.shards), dtype=torch.int32)
    for j in range(rank, len(manifest.shards), world_size):
        entry = manifest.shards[j]
        try:
            if file_sha256(shard_path(cache_dir, entry.name)) != entry.sha256:
                bad[j] = 1
        except OSError:  # vanished or unreadable since open_cache saw it
            bad[j] = 1
    if world_size > 1:
        all_reduce_sum(bad)
    names = [manifest.shards[j].name for j in torch.nonzero(bad).flatten().tolist()]
    if names:
        listed = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        raise CacheError(cache_dir, f"{len(names)} of {len(manifest.shards)} shards differ from the manifest's "
                         f"sha256 (corrupted or replaced): {listed}")


class ShardDecoder:
    """One shard checked against the manifest (size, header), read and decoded a chunk at a time."""

    def __init__(self, cache_dir: Path, manifest: Manifest, shard: int):
        entry, plan = manifest.shards[shard], manifest.plan
        self.plan, self.codec = plan, plan.codec()
        self.file = ShardFile.open(cache_dir, shard_path(cache_dir, entry.name), entry.bytes)
        header = self.file.header
        want = {"plan": plan.digest(), "first_record": entry.first_record, "records": entry.records,
                "chunks": -(-entry.records // plan.chunk_records)}
        index = header.get("arrays")
        chunks = index.get("chunks") if isinstance(index, dict) else None
        found = {**{k: header.get(k) for k in want}, "chunks": len(chunks) if isinstance(chunks, list) else None}
        if found != want:
            raise self.file.fail(f"the header does not match the manifest: {found}, expected {want}")
        self.first = entry.first_record
        table_arrays = self.file.arrays(None)
        if set(table_arrays) != {"distinct_gaps", "classes"}:
            raise self.file.fail(f"the id table holds {sorted(table_arrays)}, expected distinct_gaps and classes")
        try:
            self.table = self.codec.table(table_arrays)
        except ValueError as e:
            raise self.file.fail(str(e)) from e

    def chunk(self, c: int) -> dict[str, np.ndarray]:
        """Decoded rows of chunk c (see `codec`), checked shape by shape."""
        plan, first_record = self.plan, self.first + c * self.plan.chunk_records
        arrays = self.file.arrays(c, record=first_record)
        rows = (min(plan.chunk_records, self.first + self.file.header["records"] - first_record)) * plan.seq_len
        for name, shape in self.codec.stored_shapes(rows).items():
            found = arrays[name].shape if name in arrays else None
            if found != shape:
                raise self.file.fail(f"array {name} of chunk {c} has shape {found}, expected {shape}", first_record)
        try:
            return self.codec.decode(self.table, arrays)
        except RowError as e:
            raise self.file.fail(str(e), first_record + e.row // plan.seq_len) from e
        except ValueError as e:  # an array-level problem (a dtype): named by the chunk's first record
            raise self.file.fail(f"chunk {c}: {e}", first_record) from e


def records_of_chunk(decoded: dict[str, np.ndarray], records: np.ndarray, chunk_first: int, seq_len: int) -> list[dict]:
    """Per-record tensors (views into the decoded chunk) for the given record ids, in order."""
    out = []
    for record in records:
        rows = slice((int(record) - chunk_first) * seq_len, (int(record) - chunk_first + 1) * seq_len)
        item = {name: torch.from_numpy(a[rows]) for name, a in decoded.items()}
        item["record"] = int(record)
        out.append(item)
    return out


class CacheReader(IterableDataset):
    """The records of a cache for one rank (and, inside a DataLoader, one worker); see the module doc."""

    def __init__(self, cache_dir: str | Path, expected: Expected | None = None, *, rank: int = 0,
                 world_size: int = 1, block: int = 1, seed: int = 0, shuffle: bool = True, start: int = 0,
                 epochs: int | None = 1, prefetch: int = 4, verify: bool = True):
        self.cache_dir = Path(cache_dir)
        self.manifest = open_cache(self.cache_dir, expected)
        if start < 0 or prefetch < 1 or start % (block * world_size):
            # Blocks are counted from `start`, so only an aligned start continues each rank's own stream
            # (a trainer resumes at step x global batch, always a multiple of micro-batch x world size).
            raise ValueError(f"start {start} must be a multiple of block x world_size = {block * world_size} "
                             f"and >= 0, and prefetch {prefetch} >= 1")
        if verify:
            verify_cache(self.cache_dir, self.manifest)
        self.rank, self.world_size, self.block = rank, world_size, block
        self.order = StreamOrder(self.manifest.plan, seed, shuffle)
        self.start, self.epochs, self.prefetch = start, epochs, prefetch
        self.bytes_read = 0  # from shard files, by this reader's iterations in this process

    def split(self) -> Split:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return Split(self.rank, self.world_size, worker, workers, self.block)

    def _chunks(self, split: Split) -> Iterator[list[dict]]:
        """This reader's records, a decoded chunk's worth at a time, in stream order."""
        plan = self.manifest.plan
        for shard, records in self.order.walk(split, self.start, self.epochs):
            decoder = ShardDecoder(self.cache_dir, self.manifest, shard)
            chunk_of = (records - decoder.first) // plan.chunk_records
            cuts = np.flatnonzero(np.diff(chunk_of)) + 1  # consecutive records share a chunk: decode it once
            for run in np.split(np.arange(len(records)), cuts):
                c = int(chunk_of[run[0]])
                decoded = decoder.chunk(c)
                self.bytes_read += decoder.file.bytes_read
                decoder.file.bytes_read = 0
                yield records_of_chunk(decoded, records[run], decoder.first + c * plan.chunk_records, plan.seq_len)

    def __iter__(self) -> Iterator[dict]:
        for items in prefetched(self._chunks(self.split()), self.prefetch):
            yield from items


_DONE = object()


def prefetched(source: Iterator, depth: int) -> Iterator:
    """Run `source` in a background thread, at most `depth` items ahead; its exceptions surface here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in source:
                if not put(("item", item)):
                    return
            put(("done", _DONE))
        except BaseException as e:  # noqa: B036 (handed to the consumer, which re-raises it)
            put(("error", e))

    thread = threading.Thread(target=produce, name="cache-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "done":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
