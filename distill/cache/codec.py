"""Teacher targets of one shard <-> the plain arrays stored for it (before compression).

Rows are positions: a shard of R records of T tokens has n = R*T rows. What a row holds:

    topk     input_ids (n,) int64           the input token at that position
             topk_ids (n, k) int64           the teacher's k most likely next tokens (distinct)
             topk_logprobs (n, k) float32    their log-probs, normalised by the full log-sum-exp
             logsumexp (n,) float32          log sum_v exp(z_v / temperature) over the whole vocabulary
    sampled  input_ids (n,) int64
             sample_ids (n, N) int64         N tokens drawn with replacement from the teacher
             sample_weights (n, N) float32   1/N each (decoded only): sum_j w_j [v = x_j] estimates p_v

Stored per shard: the id table (see `idsets`). Stored per chunk of rows (so a reader decodes only the
chunks it needs): input_ids, the id gaps, and for topk the value codes, shifts (see `values`) and the
log-sum-exp. Decoded top-k entries come in the table's canonical order, not by probability.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from distill.cache import idsets, values
from distill.cache.errors import RowError

TOPK, SAMPLED = "topk", "sampled"
MODES = (TOPK, SAMPLED)
TARGET_KEYS = {TOPK: ("topk_ids", "topk_logprobs", "logsumexp"), SAMPLED: ("sample_ids",)}


@dataclass(frozen=True)
class Codec:
    mode: str
    width: int  # k for topk, the number of draws N for sampled
    vocab_size: int
    value_step: float = values.DEFAULT_STEP  # topk only
    levels: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown cache mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if not 1 <= self.width <= (self.vocab_size if self.mode == TOPK else 65535):
            raise ValueError(f"{self.mode} width {self.width} must lie in [1, "
                             f"{'vocab size ' + str(self.vocab_size) if self.mode == TOPK else 65535}]")
        object.__setattr__(self, "levels", values.value_levels(self.value_step) if self.mode == TOPK else None)

    @property
    def token_dtype(self):
        return np.uint16 if self.vocab_size <= 2 ** 16 else np.uint32

    # -- encoding ------------------------------------------------------------------------------
    def check(self, rows: dict[str, np.ndarray]) -> int:
        """Validate one shard's rows (see the module docstring); returns n. RowError names the row."""
        n = len(rows["input_ids"])
        ids = rows["topk_ids" if self.mode == TOPK else "sample_ids"]
        if ids.shape != (n, self.width):
            raise ValueError(f"ids have shape {ids.shape}, expected {(n, self.width)}")
        for name in ("input_ids", "topk_ids" if self.mode == TOPK else "sample_ids"):
            bad = (rows[name] < 0) | (rows[name] >= self.vocab_size)
            if bad.any():
                row = int(np.flatnonzero(bad.reshape(n, -1).any(axis=1))[0])
                raise RowError(row, f"{name} outside the vocabulary [0, {self.vocab_size})")
        if self.mode == TOPK:
            if rows["topk_logprobs"].shape != (n, self.width) or rows["logsumexp"].shape != (n,):
                raise ValueError("topk_logprobs must be (n, k) and logsumexp (n,)")
            values.check_logprobs(rows["topk_logprobs"])
            _check_finite(rows["logsumexp"])
        return n

    def encode(self, rows: dict[str, np.ndarray], chunk_rows: int) -> tuple[dict, list[dict]]:
        """Arrays to store for one shard: ({name: array} once per shard, [{name: array}] per chunk)."""
        n = self.check(rows)
        ids = rows["topk_ids" if self.mode == TOPK else "sample_ids"].astype(np.int64)
        table, shard_arrays = idsets.build_table(ids)
        gaps, order = idsets.encode_rows(ids, table)
        if self.mode == TOPK and self.width > 1:
            repeated = (gaps[:, 1:] == 0).any(axis=1)  # ranks sorted per row: a zero gap is a repeat
            if repeated.any():
                raise RowError(int(np.flatnonzero(repeated)[0]), "top-k ids are not distinct")
        chunk_arrays = []
        for start in range(0, n, chunk_rows):
            part = slice(start, min(start + chunk_rows, n))
            arrays = {"input_ids": rows["input_ids"][part].astype(self.token_dtype), "gaps": gaps[part]}
            if self.mode == TOPK:
                lp = np.take_along_axis(rows["topk_logprobs"][part].astype(np.float32), order[part], axis=1)
                arrays["codes"], arrays["shift"] = values.encode_logprobs(lp, self.levels, self.value_step)
                arrays["logsumexp"] = rows["logsumexp"][part].astype(np.float32)
            chunk_arrays.append(arrays)
        return shard_arrays, chunk_arrays

    # -- decoding ------------------------------------------------------------------------------
    # Decoding trusts nothing it reads: every id, code and value is range-checked, so a damaged or
    # hostile shard stops with a RowError (naming the row) or a ValueError, never an IndexError from
    # inside numpy or a silently wrong target.
    def table(self, shard_arrays: dict[str, np.ndarray]) -> np.ndarray:
        _check_dtypes(shard_arrays, {"distinct_gaps": ("<u4",), "classes": ("|u1",)})
        gaps, classes = shard_arrays["distinct_gaps"], shard_arrays["classes"]
        if gaps.ndim != 1 or gaps.shape != classes.shape:
            raise ValueError(f"the id table's arrays have shapes {gaps.shape} and {classes.shape}, expected two "
                             "equal 1-D shapes")
        if (gaps[1:] == 0).any():
            raise ValueError("the id table lists an id twice (a zero gap between distinct ids)")
        table = idsets.table_from_arrays(gaps, classes)
        if len(table) and table.max() >= self.vocab_size:
            raise ValueError(f"the id table holds id {int(table.max())}, outside the vocabulary [0, {self.vocab_size})")
        return table

    def decode(self, table: np.ndarray, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One chunk's rows (see the module docstring) from its stored arrays and the shard's table."""
        _check_dtypes(arrays, self.stored_dtypes())
        _check_below(arrays["input_ids"].reshape(-1, 1), self.vocab_size, "input_ids outside the vocabulary")
        ids = idsets.decode_rows(arrays["gaps"], table)
        out = {"input_ids": arrays["input_ids"].astype(np.int64)}
        if self.mode == TOPK:
            if self.width > 1 and arrays["gaps"].size:
                repeated = (arrays["gaps"][:, 1:] == 0).any(axis=1)
                if repeated.any():
                    raise RowError(int(np.flatnonzero(repeated)[0]), "top-k ids are not distinct")
            _check_below(arrays["codes"], len(self.levels), "value code outside the codebook")
            out["topk_ids"] = ids
            out["topk_logprobs"] = values.decode_logprobs(arrays["codes"], arrays["shift"], self.levels)
            values.check_logprobs(out["topk_logprobs"])  # a shift can push a value above 0
            _check_finite(arrays["logsumexp"])
            out["logsumexp"] = arrays["logsumexp"]
        else:
            out["sample_ids"] = ids
            out["sample_weights"] = np.full(ids.shape, 1.0 / self.width, dtype=np.float32)
        return out

    def stored_dtypes(self) -> dict[str, tuple[str, ...]]:
        """The dtypes each per-chunk array may be stored as (what `encode` writes)."""
        dtypes = {"input_ids": (np.dtype(self.token_dtype).str,), "gaps": ("<u2", "<u4")}
        if self.mode == TOPK:
            dtypes.update(codes=("<u2",), shift=("<i4",), logsumexp=("<f4",))
        return dtypes

    def stored_shapes(self, rows: int) -> dict[str, tuple[int, ...]]:
        """The shape of each per-chunk array for a chunk of `rows` rows."""
        shapes = {"input_ids": (rows,), "gaps": (rows, self.width)}
        if self.mode == TOPK:
            shapes.update(codes=(rows, self.width), shift=(rows,), logsumexp=(rows,))
        return shapes


def _check_dtypes(arrays: dict[str, np.ndarray], allowed: dict[str, tuple[str, ...]]) -> None:
    for name, dtypes in allowed.items():
        if arrays[name].dtype.str not in dtypes:
            raise ValueError(f"array {name} is stored as {arrays[name].dtype.str}, expected {' or '.join(dtypes)}")


def _check_below(values_: np.ndarray, limit: int, problem: str) -> None:
    """Refuse any entry >= limit in (n, w) unsigned values; RowError names the first bad row."""
    if values_.size and values_.max() >= limit:
        row = int(np.flatnonzero((values_ >= limit).any(axis=1))[0])
        raise RowError(row, f"{problem} [0, {limit}): {int(values_[row].max())}")


def _check_finite(logsumexp: np.ndarray) -> None:
    bad = ~np.isfinite(logsumexp)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise RowError(row, f"logsumexp {float(logsumexp[row])} is not finite")
