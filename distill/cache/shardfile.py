"""One shard file: a small JSON header, then zstd frames of plain arrays. No pickle anywhere.

    bytes 0-7     magic b"UNDOLC1\\n"
    bytes 8-15    header length H, little-endian uint64
    next H bytes  header, UTF-8 JSON: plan digest, shard index, record range, chunking and, for every
                  array, [offset into the payload, frame size, dtype, shape]; plus the payload's sha256
    the rest      payload: the frames (see `planes`)

The manifest keeps each shard's size and the sha256 of the whole file: a training run checks every
shard's sha256 before its first step (`reader.verify_cache`), then reads only the frames it needs.
The payload hash inside the header lets a restarted precompute check a shard it finds before the
manifest exists.
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


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    """The sha256 of a file, read a block at a time (a shard never has to fit in memory to be checked)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(block):
            digest.update(data)
    return digest.hexdigest()


class ShardFile:
    """A shard: its header parsed up front, frames read and decompressed on request.

    `load` reads the whole file into memory and can check it against a sha256 (precompute's resume, a
    lone reader); `open` reads the header only and then, per request, just the bytes of the frames asked
    for, so a rank that needs a few chunks of a shard reads those (the manifest's sha256 is checked
    beforehand by `reader.verify_cache`; each zstd frame carries its own checksum). `bytes_read` counts
    what was read from disk.
    """

    def __init__(self, cache_dir: Path, name: str, size: int, read):
        self.cache_dir, self.name, self.size, self._read = cache_dir, name, size, read
        self.bytes_read = 0
        prefix = self._bytes(0, min(_PREFIX, size))
        if len(prefix) < _PREFIX or prefix[: len(MAGIC)] != MAGIC:
            raise self.fail("not a logit-cache shard (bad magic bytes)")
        (self._header_len,) = struct.unpack("<Q", prefix[len(MAGIC):])
        if _PREFIX + self._header_len > size:
            raise self.fail(f"the header claims {self._header_len} bytes but the file has {size} (truncated)")
        self.header = self._parse_header(self._bytes(_PREFIX, self._header_len))
        self.payload_start = _PREFIX + self._header_len

    @classmethod
    def load(cls, cache_dir: Path, path: Path, size: int | None = None, sha256: str | None = None) -> ShardFile:
        """Read a whole shard; a missing file or one whose size or sha256 differs from the manifest's is refused."""
        name = path.name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CacheError(cache_dir, "the shard file is missing", shard=name) from None
        _check_size(cache_dir, name, len(data), size)
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise CacheError(cache_dir, "the file's sha256 differs from the manifest's (corrupted)", shard=name)
        view = memoryview(data)
        return cls(cache_dir, name, len(data), lambda offset, n: view[offset:offset + n])

    @classmethod
    def open(cls, cache_dir: Path, path: Path, size: int) -> ShardFile:
        """A shard read by ranges from disk (its header now, frames on request); its size must be `size`."""
        name = path.name
        try:
            found = path.stat().st_size
        except FileNotFoundError:
            raise CacheError(cache_dir, "the shard file is missing", shard=name) from None
        _check_size(cache_dir, name, found, size)

        def read(offset: int, n: int) -> bytes:
            with open(path, "rb") as f:  # opened per read: no descriptor outlives a request
                f.seek(offset)
                return f.read(n)

        return cls(cache_dir, name, size, read)

    def _bytes(self, offset: int, n: int):
        data = self._read(offset, n)
        self.bytes_read += len(data)
        if len(data) != n:
            raise self.fail(f"{len(data)} bytes where {n} were expected at offset {offset} (truncated)")
        return data

    def fail(self, problem: str, record: int | None = None) -> CacheError:
        error = CacheError(self.cache_dir, problem, shard=self.name, record=record)
        error.local = True  # met by the rank that reads this part of the shard, perhaps by it alone
        return error

    def _parse_header(self, raw) -> dict:
        try:
            header = json.loads(bytes(raw))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self.fail(f"unreadable header: {e}") from e
        if not isinstance(header, dict) or header.get("kind") != SHARD_KIND:
            raise self.fail("the header is not a logit-cache shard header")
        return header

    def payload_sha256(self) -> str:
        return hashlib.sha256(self._bytes(self.payload_start, self.size - self.payload_start)).hexdigest()

    def verify_payload(self) -> None:
        """Check the payload against the header's own hash (used before a manifest exists)."""
        if self.payload_sha256() != self.header.get("payload_sha256"):
            raise self.fail("the payload's sha256 differs from its header's (truncated or corrupted)")

    def _index(self, chunk: int | None, record: int | None) -> dict[str, tuple]:
        try:
            index = self.header["arrays"]
            listed = dict(index["shard"] if chunk is None else index["chunks"][chunk])
            return {name: (int(o), int(n), str(d), tuple(int(x) for x in shape))
                    for name, (o, n, d, shape) in listed.items()}
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise self.fail(f"the header's array index is malformed ({type(e).__name__}: {e})", record) from e

    def arrays(self, chunk: int | None = None, record: int | None = None) -> dict[str, np.ndarray]:
        """The shard-level arrays (chunk None) or those of chunk `chunk`, decompressed; one read covers them."""
        entries = self._index(chunk, record)
        payload_size = self.size - self.payload_start
        for name, (offset, size, _, _) in entries.items():
            if not 0 <= offset <= offset + size <= payload_size:
                raise self.fail(f"array {name} lies outside the file (truncated)", record)
        if not entries:
            return {}
        lo = min(offset for offset, *_ in entries.values())
        hi = max(offset + size for offset, size, *_ in entries.values())
        span = memoryview(self._bytes(self.payload_start + lo, hi - lo))
        out = {}
        for name, (offset, size, dtype, shape) in entries.items():
            try:
                out[name] = planes.unpack(span[offset - lo:offset - lo + size], dtype, shape)
            except ValueError as e:
                raise self.fail(f"array {name}: {e}", record) from e
        return out


def _check_size(cache_dir: Path, name: str, found: int, size: int | None) -> None:
    if size is not None and found != size:
        raise CacheError(cache_dir, f"the file has {found} bytes, the manifest says {size} "
                         "(truncated or replaced)", shard=name)
