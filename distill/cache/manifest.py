"""The cache directory's JSON: the plan (what is computed, from what) and the manifest (plan + shards).

    cache/
      plan.json         written first by precompute; a restarted run must bring the same plan
      shard-000000.bin  records [0, R), ...; each written to a temporary name, then renamed
      manifest.json     written last, once every shard exists: the cache is complete only then

Fields (manifest.json = the plan's fields + "shards"):
    format, format_version   "undo-logit-cache", 1
    mode                     "topk" or "sampled"; k or samples (the other null)
    temperature              targets are softmax(z / temperature) of the teacher's logits z
    sampling_seed            sampled mode: draws of record i come from a generator seeded by (seed, i)
    vocab_size, seq_len      the tokenizer's size: targets are the teacher's distribution over its ids (an
                             output matrix's padding rows past it left out), ids lie in [0, vocab_size);
                             every record is seq_len positions
    records, records_per_shard, chunk_records   shard j holds records [j*R, min((j+1)*R, records))
    teacher, tokenizer, dataset   fingerprints (sha256, see `fingerprint`); dataset_description
    value_step, levels_sha256, zstd_level        the codec (see `values`, `planes`)
    shards                   [{name, first_record, records, bytes, sha256}] in record order
Records are keyed by their index in the dataset (the sample id), never by a training step.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from distill.cache.codec import MODES, TOPK, Codec
from distill.cache.errors import CacheError

FORMAT = "undo-logit-cache"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PLAN = "plan.json"


@dataclass(frozen=True)
class CachePlan:
    mode: str
    k: int | None
    samples: int | None
    temperature: float
    sampling_seed: int | None
    vocab_size: int
    seq_len: int
    records: int
    records_per_shard: int
    chunk_records: int
    teacher: str
    tokenizer: str
    dataset: str
    dataset_description: dict
    value_step: float | None
    levels_sha256: str | None
    zstd_level: int

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if (self.k is None) == (self.mode == TOPK) or (self.samples is None) == (self.mode != TOPK):
            raise ValueError(f"mode {self.mode} needs {'k' if self.mode == TOPK else 'samples'} and not the other")
        for name in ("vocab_size", "seq_len", "records", "records_per_shard", "chunk_records", "zstd_level"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not _is_number(self.temperature) or not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        width, limit = (self.k, self.vocab_size) if self.mode == TOPK else (self.samples, 65535)
        if not _is_int(width) or not 1 <= width <= limit:
            raise ValueError(f"{'k' if self.mode == TOPK else 'samples'} must be an integer in [1, {limit}], "
                             f"got {width!r}")
        if self.chunk_records > self.records_per_shard:
            raise ValueError(f"chunk_records {self.chunk_records} exceeds records_per_shard {self.records_per_shard}")
        if self.mode == TOPK and not (_is_number(self.value_step) and 0 < self.value_step < 1):
            raise ValueError(f"value_step must be a number in (0, 1), got {self.value_step!r}")
        if self.mode != TOPK and not (_is_int(self.sampling_seed) and self.sampling_seed >= 0):
            raise ValueError(f"sampling_seed must be an integer >= 0, got {self.sampling_seed!r}")
        if not 1 <= self.zstd_level <= 22:
            raise ValueError(f"zstd_level must lie in [1, 22], got {self.zstd_level}")

    @property
    def width(self) -> int:
        return self.k if self.mode == TOPK else self.samples

    @property
    def num_shards(self) -> int:
        return -(-self.records // self.records_per_shard)

    def shard_records(self, j: int) -> range:
        """The records of shard j (world-size independent: fixed by records_per_shard alone)."""
        first = j * self.records_per_shard
        return range(first, min(first + self.records_per_shard, self.records))

    def codec(self) -> Codec:
        return Codec(self.mode, self.width, self.vocab_size, *([self.value_step] if self.mode == TOPK else []))

    def to_json(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_json(cls, obj: dict, where: str) -> CachePlan:
        """Strict: unknown or missing keys and a different format version are errors naming `where`."""
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
            raise ValueError(f"{where} is not a {FORMAT} file (format {found!r})")
        if obj.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{where} has format_version {obj.get('format_version')!r}; this reader knows "
                             f"{FORMAT_VERSION}")
        names = {f.name for f in fields(cls)}
        given = set(obj) - {"format", "format_version"}
        if given != names:
            raise ValueError(f"{where}: unknown keys {sorted(given - names)}, missing keys {sorted(names - given)}")
        return cls(**{n: obj[n] for n in names})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shard_name(j: int) -> str:
    return f"shard-{j:06d}.bin"


@dataclass(frozen=True)
class ShardEntry:
    name: str
    first_record: int
    records: int
    bytes: int
    sha256: str

    def __post_init__(self):
        if not all(_is_int(v) and v >= 0 for v in (self.first_record, self.records, self.bytes)):
            raise ValueError(f"shard {self.name!r}: first_record, records and bytes must be integers >= 0")
        if not (isinstance(self.sha256, str) and len(self.sha256) == 64
                and all(c in "0123456789abcdef" for c in self.sha256)):
            raise ValueError(f"shard {self.name!r}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")


@dataclass(frozen=True)
class Manifest:
    plan: CachePlan
    shards: tuple[ShardEntry, ...]

    def to_json(self) -> dict:
        return {**self.plan.to_json(), "shards": [asdict(s) for s in self.shards]}


def shard_path(cache_dir: Path, name: str) -> Path:
    """The file of a shard name, refusing names that leave the cache directory ("../x", "/x", "a/b")."""
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise CacheError(cache_dir, "the shard name points outside the cache directory "
                         "(expected a plain file name)", shard=repr(name))
    path = cache_dir / name
    if path.resolve().parent != cache_dir.resolve():
        raise CacheError(cache_dir, "the shard name resolves outside the cache directory", shard=repr(name))
    return path


def load_manifest(cache_dir: Path) -> Manifest:
    """Read and check manifest.json: schema, shard names and that shards tile [0, records) in order."""
    cache_dir = Path(cache_dir)
    path = cache_dir / MANIFEST
    if not path.is_file():
        hint = " (precompute has not finished: plan.json exists)" if (cache_dir / PLAN).is_file() else ""
        raise CacheError(cache_dir, f"no {MANIFEST}: not a complete logit cache{hint}")
    try:
        obj = json.loads(path.read_text())
        shards = obj.pop("shards") if isinstance(obj, dict) and "shards" in obj else None
        plan = CachePlan.from_json(obj, str(path))
        if not isinstance(shards, list) or not all(isinstance(s, dict) for s in shards):
            raise ValueError(f"shards must be a list of shard objects, got {type(shards).__name__}")
        entries = tuple(ShardEntry(**s) for s in shards)
    except (ValueError, TypeError) as e:
        raise CacheError(cache_dir, f"{MANIFEST} is malformed: {e}") from e
    for j, entry in enumerate(entries):
        shard_path(cache_dir, entry.name)
        expected = plan.shard_records(j)
        if (entry.first_record, entry.records) != (expected.start, len(expected)):
            raise CacheError(cache_dir, f"{MANIFEST} lists records [{entry.first_record}, "
                             f"{entry.first_record + entry.records}) at position {j}, expected "
                             f"[{expected.start}, {expected.stop})", shard=entry.name)
    if len(entries) != plan.num_shards:
        raise CacheError(cache_dir, f"{MANIFEST} lists {len(entries)} shards for {plan.records} records "
                         f"of {plan.records_per_shard} per shard; expected {plan.num_shards}")
    return Manifest(plan, entries)
