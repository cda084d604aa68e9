"""The teacher-logit cache: computed once by `precompute`, streamed back by `CacheReader`.

Modules, each one thing: `targets` (logits -> top-k or sampled targets), `values` (log-prob
quantiser), `idsets` (id sets -> gaps), `planes` (array <-> zstd frame), `codec` (a shard's targets
<-> stored arrays), `shardfile` (the shard file), `manifest` (plan, manifest, shard names),
`fingerprint`, `writer` (atomic shards, manifest last), `teacher` (the ZeRO-3 inference engine),
`precompute` (the distributed job), `stream` (order and split), `reader` (the streaming dataset).
"""

from distill.cache.batches import CacheBatches
from distill.cache.codec import SAMPLED, TOPK, Codec
from distill.cache.errors import CacheError
from distill.cache.fingerprint import dataset_fingerprint, teacher_fingerprint, tokenizer_fingerprint
from distill.cache.manifest import CachePlan, Manifest, ShardEntry, load_manifest
from distill.cache.precompute import PrecomputeOptions, PrecomputeStats, compute_shards, make_plan, run_precompute
from distill.cache.reader import CacheReader, Expected, open_cache
from distill.cache.stream import Split, StreamOrder
from distill.cache.writer import CacheWriter, prepare

__all__ = [
    "CacheBatches",
    "SAMPLED", "TOPK", "CacheError", "CachePlan", "CacheReader", "CacheWriter", "Codec", "Expected", "Manifest",
    "PrecomputeOptions", "PrecomputeStats", "ShardEntry", "Split", "StreamOrder", "compute_shards",
    "dataset_fingerprint", "load_manifest", "make_plan", "open_cache", "prepare", "run_precompute",
    "teacher_fingerprint", "tokenizer_fingerprint",
]
