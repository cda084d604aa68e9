"""Sets of token ids per position (top-k or sampled draws) <-> small integer gaps.

Which tokens a teacher ranks highly is strongly skewed: a few thousand frequent tokens fill most
top-k lists. Each shard therefore carries a table of its distinct ids ordered by frequency class
(floor(log2 count), most frequent class first; ascending id within a class) and codes every id as
its rank r in that table. A position's ranks are sorted and stored as gaps (the first gap is the
smallest rank itself), so frequent tokens cost a few bits and rare ones about log2(table size).
Any order within a position carries no information for the loss, so the ids are returned in this
canonical order (by rank), with their values permuted alongside.

The table itself is stored as the distinct ids ascending (as gaps) plus one class byte per id:
the decoder rebuilds the rank order from those two, with no sort order stored explicitly.
Ids are int64 throughout, so any vocabulary size fits (Gemma's 262,144 needs 18 bits).
"""

from __future__ import annotations

import numpy as np

from distill.cache.errors import RowError


def build_table(ids: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The rank table of the ids of one shard (any shape, int64 >= 0).

    Returns (table (D,) int64: rank -> id, stored arrays {"distinct_gaps": (D,) uint32,
    "classes": (D,) uint8}).
    """
    counts = np.bincount(ids.reshape(-1))
    distinct = np.flatnonzero(counts)
    counts = counts[distinct]
    frequency = np.floor(np.log2(counts)).astype(np.int64)
    classes = (frequency.max() - frequency).astype(np.uint8)  # 0 = the most frequent class
    gaps = np.diff(distinct, prepend=0).astype(np.uint32)
    return table_from_arrays(gaps, classes), {"distinct_gaps": gaps, "classes": classes}


def table_from_arrays(distinct_gaps: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Rebuild the (D,) int64 rank -> id table from its stored arrays."""
    distinct = np.cumsum(distinct_gaps, dtype=np.int64)
    return distinct[np.lexsort((distinct, classes))]


def encode_rows(ids: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Code (n, w) int64 ids of a shard whose table is `table` (built from these ids or a superset).

    Returns gaps (n, w), uint16 where every gap fits else uint32, and order (n, w): the permutation of
    each row that sorts it by rank (apply it to the row's values with np.take_along_axis).
    """
    rank_of = np.zeros(int(table.max()) + 1 if len(table) else 0, dtype=np.int64)
    rank_of[table] = np.arange(len(table))  # a dense lookup: O(1) per id, unlike a search
    ranks = rank_of[ids]
    order = np.argsort(ranks, axis=1, kind="stable")
    ranks = np.take_along_axis(ranks, order, axis=1)
    gaps = np.diff(ranks, axis=1, prepend=0)
    dtype = np.uint16 if gaps.size == 0 or gaps.max() < 2 ** 16 else np.uint32
    return gaps.astype(dtype), order


def decode_rows(gaps: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(n, w) int64 ids from (n, w) gaps; raises RowError if a rank leaves the table."""
    ranks = np.cumsum(gaps, axis=1, dtype=np.int64 if gaps.dtype == np.uint32 else np.int32)
    if ranks.size:
        last = ranks[:, -1]  # ranks never decrease along a row, so the last is the largest
        if last.max() >= len(table):
            row = int(np.flatnonzero(last >= len(table))[0])
            raise RowError(row, f"refers to rank {int(last[row])} of a table of {len(table)} ids")
    return np.take(table, ranks)
