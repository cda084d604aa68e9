"""The cache's one error type: a cache that cannot be trusted, named down to the shard and record."""

from __future__ import annotations

from distill.errors import UserError


class CacheError(UserError):
    """A logit cache that is missing, damaged or made for another run.

    It is a UserError (launch scripts print one line and exit 2): the message names the cache
    directory, the shard file and, where known, the record, and what was expected instead.
    """

    def __init__(self, cache_dir, problem: str, shard: str | None = None, record: int | None = None):
        where = f"logit cache {cache_dir}"
        if shard is not None:
            where += f", shard {shard}"
        if record is not None:
            where += f", record {record}"
        super().__init__(f"{where}: {problem}")
        self.cache_dir, self.shard, self.record = cache_dir, shard, record


class RowError(ValueError):
    """A bad row (position) in arrays being encoded or decoded; the caller maps it to its record."""

    def __init__(self, row: int, problem: str):
        super().__init__(f"row {row}: {problem}")
        self.row = row
