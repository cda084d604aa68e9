"""One shard file: a small JSON header, then zstd frames of plain arrays. No pickle anywhere.

    bytes 0-7     magic b"UNDOLC1\\n"
    bytes 8-15    header length H, little-endian uint64
    next H bytes  header, UTF-8 JSON: plan digest, shard index, record range, chunking and, for every
                  array, [offset into the payload, frame size, dtype, shape]; plus the payload's sha256
    the rest      payload: the frames (see `planes`)

The manifest keeps each shard's size and the sha256 of the whole file, and a reader checks both
before it decodes anything. The payload hash inside the header lets a restarted precompute check a
shard it finds before the manifest exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np

from distill.cache import planes
from distill.cache.errors import CacheError

MAGIC = b"UNDOLC1\n"
SHARD_KIND = "undo-logit-cache-shard"
_PREFIX = len(MAGIC) + 8


def write_shard(path: Path, header: dict, shard_arrays: dict, chunk_arrays: list[dict], level: int) -> tuple[int, str]:
    """Write the shard to `path` atomically (temporary name, fsync, rename); returns (bytes, file sha256)."""
    frames, index = [], {"shard": {}, "chunks": []}
    offset = 0

    def add(array: np.ndarray) -> list:
        nonlocal offset
        frame = planes.pack(array, level)
        frames.append(frame)
        entry = [offset, len(frame), np.ascontiguousarray(array).dtype.str, list(array.shape)]
        offset += len(frame)
        return entry

    index["shard"] = {name: add(a) for name, a in shard_arrays.items()}
    index["chunks"] = [{name: add(a) for name, a in chunk.items()} for chunk in chunk_arrays]
    payload_hash = hashlib.sha256()
    for frame in frames:
        payload_hash.update(frame)
    head = json.dumps({"kind": SHARD_KIND, **header, "arrays": index, "payload_sha256": payload_hash.hexdigest()},
                      sort_keys=True).encode()
    prefix = MAGIC + struct.pack("<Q", len(head)) + head
    file_hash = hashlib.sha256(prefix)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(prefix)
        for frame in frames:
            f.write(frame)
            file_hash.update(frame)
        f.flush()
        os.fsync(f.fileno())  # the rename below must never publish a file whose bytes are not on disk
    os.replace(tmp, path)
    return len(prefix) + offset, file_hash.hexdigest()


class ShardFile:
    """A shard read into memory, its bytes checked; frames decompressed on request."""

    def __init__(self, cache_dir: Path, name: str, data: bytes):
        self.cache_dir, self.name, self.data = cache_dir, name, data
        self.header = self._parse_header()
        self.payload = memoryview(data)[_PREFIX + self._header_len:]

    @classmethod
    def load(cls, cache_dir: Path, path: Path, size: int | None = None, sha256: str | None = None) -> ShardFile:
        """Read a shard; a missing file or one whose size or sha256 differs from the manifest's is refused."""
        name = path.name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CacheError(cache_dir, "the shard file is missing", shard=name) from None
        if size is not None and len(data) != size:
            raise CacheError(cache_dir, f"the file has {len(data)} bytes, the manifest says {size} "
                             "(truncated or replaced)", shard=name)
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise CacheError(cache_dir, "the file's sha256 differs from the manifest's (corrupted)", shard=name)
        return cls(cache_dir, name, data)

    def fail(self, problem: str, record: int | None = None) -> CacheError:
        return CacheError(self.cache_dir, problem, shard=self.name, record=record)

    def _parse_header(self) -> dict:
        if len(self.data) < _PREFIX or self.data[: len(MAGIC)] != MAGIC:
            raise self.fail("not a logit-cache shard (bad magic bytes)")
        (self._header_len,) = struct.unpack("<Q", self.data[len(MAGIC):_PREFIX])
        if _PREFIX + self._header_len > len(self.data):
            raise self.fail(f"the header claims {self._header_len} bytes but the file has {len(self.data)} (truncated)")
        try:
            header = json.loads(self.data[_PREFIX:_PREFIX + self._header_len])
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self.fail(f"unreadable header: {e}") from e
        if not isinstance(header, dict) or header.get("kind") != SHARD_KIND:
            raise self.fail("the header is not a logit-cache shard header")
        return header

    def verify_payload(self) -> None:
        """Check the payload against the header's own hash (used before a manifest exists)."""
        if hashlib.sha256(self.payload).hexdigest() != self.header.get("payload_sha256"):
            raise self.fail("the payload's sha256 differs from its header's (truncated or corrupted)")

    def arrays(self, chunk: int | None = None, record: int | None = None) -> dict[str, np.ndarray]:
        """The shard-level arrays (chunk None) or those of chunk `chunk`, decompressed."""
        try:
            index = self.header["arrays"]
            listed = dict(index["shard"] if chunk is None else index["chunks"][chunk])
            entries = {name: (int(o), int(n), str(d), tuple(int(x) for x in shape))
                       for name, (o, n, d, shape) in listed.items()}
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise self.fail(f"the header's array index is malformed ({type(e).__name__}: {e})", record) from e
        out = {}
        for name, (offset, size, dtype, shape) in entries.items():
            if not 0 <= offset <= offset + size <= len(self.payload):
                raise self.fail(f"array {name} lies outside the file (truncated)", record)
            try:
                out[name] = planes.unpack(self.payload[offset:offset + size], dtype, shape)
            except ValueError as e:
                raise self.fail(f"array {name}: {e}", record) from e
        return out

    def file_sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()
