"""Write a cache directory safely: plan first, each shard atomically, the manifest only at the end.

A shard's final name exists only once all its bytes are on disk (temporary name, fsync, rename), so
after a kill at any point every final-named shard is complete; a restart with the same plan checks
and keeps them and computes the rest. Shard bytes depend only on the plan and the shard's records,
never on which rank or how many ranks wrote them, so a resumed cache is byte-identical to one
written in a single run.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from distill.cache.errors import CacheError, RowError
from distill.cache.manifest import MANIFEST, PLAN, CachePlan, Manifest, ShardEntry, shard_name
from distill.cache.shardfile import ShardFile, file_sha256, write_shard
from distill.errors import UserError
from distill.rundir import write_json

FRESH, RESUME, COMPLETE = "fresh", "resume", "complete"


def prepare(cache_dir: Path, plan: CachePlan, overwrite: bool = False) -> str:
    """Decide what a precompute does with `cache_dir` (call on one rank): FRESH, RESUME or COMPLETE.

    A directory with another plan, or one that is not a cache, is refused unless `overwrite` (which
    deletes only a directory that holds a plan or a manifest)."""
    cache_dir = Path(cache_dir)
    if cache_dir.exists() and not cache_dir.is_dir():
        raise UserError(f"--out {cache_dir} is a file, not a cache directory")
    saved = next((cache_dir / f for f in (MANIFEST, PLAN) if (cache_dir / f).is_file()), None)
    if cache_dir.exists() and any(cache_dir.iterdir()) and saved is None:
        raise UserError(f"--out {cache_dir} exists and is not a logit cache (no {PLAN} or {MANIFEST}); not touching it")
    if saved is not None and overwrite:
        shutil.rmtree(cache_dir)
        saved = None
    if saved is None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_json(cache_dir / PLAN, plan.to_json())
        return FRESH
    theirs = json.loads(saved.read_text())
    theirs.pop("shards", None)
    ours = plan.to_json()
    changed = [f"{k}: {theirs.get(k, '<absent>')!r} -> {ours.get(k, '<absent>')!r}"
               for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
    if changed:
        state = "a finished cache" if saved.name == MANIFEST else "an unfinished precompute"
        raise UserError(f"--out {cache_dir} holds {state} with a different plan; rerun with the same arguments "
                        "or pass --overwrite. Changed: " + "; ".join(changed))
    return COMPLETE if saved.name == MANIFEST else RESUME


class CacheWriter:
    """Shards of one plan in one directory (every rank holds one; each writes only its own shards)."""

    def __init__(self, cache_dir: Path, plan: CachePlan):
        self.cache_dir, self.plan = Path(cache_dir), plan
        self.codec = plan.codec()
        self.digest = plan.digest()

    def path(self, j: int) -> Path:
        return self.cache_dir / shard_name(j)

    def _header(self, j: int) -> dict:
        records = self.plan.shard_records(j)
        return {"plan": self.digest, "shard": j, "first_record": records.start, "records": len(records),
                "seq_len": self.plan.seq_len, "chunk_records": self.plan.chunk_records, "mode": self.plan.mode,
                "width": self.plan.width}

    def existing(self, j: int) -> ShardEntry | None:
        """The entry of shard j if a complete, intact shard of this plan is on disk, else None.

        A damaged final-named file (possible only through the disk, never through a kill) is
        reported on stderr and removed so that it is computed again."""
        path = self.path(j)
        if not path.is_file():
            return None
        try:
            shard = ShardFile.load(self.cache_dir, path)
            if {k: shard.header.get(k) for k in self._header(j)} != self._header(j):
                raise shard.fail("the header belongs to another plan or shard")
            shard.verify_payload()
        except CacheError as e:
            print(f"warning: recomputing a damaged shard: {e}", file=sys.stderr, flush=True)
            path.unlink()
            return None
        return ShardEntry(path.name, shard.header["first_record"], shard.header["records"], shard.size,
                          file_sha256(path))

    def write(self, j: int, rows: dict[str, np.ndarray]) -> ShardEntry:
        """Encode and write shard j from its rows (see `codec`: n = records x seq_len rows)."""
        records = self.plan.shard_records(j)
        if len(rows["input_ids"]) != len(records) * self.plan.seq_len:
            raise ValueError(f"shard {j} needs {len(records)} x {self.plan.seq_len} rows, got {len(rows['input_ids'])}")
        try:
            shard_arrays, chunks = self.codec.encode(rows, self.plan.chunk_records * self.plan.seq_len)
        except ValueError as e:
            record = records.start + e.row // self.plan.seq_len if isinstance(e, RowError) else None
            raise CacheError(self.cache_dir, f"cannot store the teacher's targets: {e}", shard=shard_name(j),
                             record=record) from e
        size, sha = write_shard(self.path(j), self._header(j), shard_arrays, chunks, self.plan.zstd_level)
        return ShardEntry(shard_name(j), records.start, len(records), size, sha)

    def commit(self, entries: list[ShardEntry]) -> Manifest:
        """Write manifest.json once every shard is listed and on disk; then drop plan.json and leftovers."""
        by_name = {e.name: e for e in entries}
        names = [shard_name(j) for j in range(self.plan.num_shards)]
        missing = [name for name in names if name not in by_name]
        if missing:
            raise CacheError(self.cache_dir, f"cannot commit: {len(missing)} shards were not written",
                             shard=missing[0])
        shards = tuple(by_name[name] for name in names)
        for e in shards:
            path = self.cache_dir / e.name
            if not path.is_file() or path.stat().st_size != e.bytes:
                raise CacheError(self.cache_dir, "cannot commit: the shard is missing or changed on disk", shard=e.name)
        manifest = Manifest(self.plan, shards)
        write_json(self.cache_dir / MANIFEST, manifest.to_json())
        (self.cache_dir / PLAN).unlink(missing_ok=True)
        for leftover in self.cache_dir.glob("*.tmp"):  # temporaries of a killed run, since rewritten
            leftover.unlink()
        return manifest

