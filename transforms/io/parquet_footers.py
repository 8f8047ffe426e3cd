"""Parquet footers kept between requests, and the row groups a query needs chosen from their statistics.

An archive file never changes once written (window files and compacted files are written atomically under
names of their own, and deleted, never rewritten), so its parsed footer is cached by path, size and mtime:
a query pays for listing its partitions, not for fetching and parsing every file's footer again. Row groups
are pruned here, once, from the cached statistics (time range, a pinned `__name__`), and the bytes a query
fetches are counted from the same choice.
"""

from __future__ import annotations

import collections
import dataclasses
import threading

import pyarrow.fs as pafs
import pyarrow.parquet as pq

# A Parquet file ends with its footer, a 4-byte footer length and the 4-byte magic "PAR1".
FOOTER_TAIL = 8
# ~50 KiB each parsed (a compacted file's 18 groups x 28 columns); 4096 of them cover months of hour partitions.
CACHED_FOOTERS = 4096


@dataclasses.dataclass(frozen=True)
class Group:
    """What pruning needs of one row group; None where the file has no statistics (never pruned on them)."""

    first_ms: int | None
    last_ms: int | None
    name_min: str | None
    name_max: str | None
    read_bytes: int  # the compressed chunks of the columns a query reads

    def needed(self, start_ms: int, end_ms: int, name: str | None) -> bool:
        if self.first_ms is not None and self.last_ms is not None and (self.last_ms < start_ms
                                                                         or self.first_ms > end_ms):
            return False
        if name is not None and self.name_min is not None and self.name_max is not None:
            return self.name_min <= name <= self.name_max
        return True


@dataclasses.dataclass(frozen=True)
class Footer:
    metadata: pq.FileMetaData
    groups: tuple[Group, ...]

    @property
    def size(self) -> int:
        return self.metadata.serialized_size + FOOTER_TAIL

    def groups_for(self, start_ms: int, end_ms: int, name: str | None) -> list[int]:
        return [i for i, group in enumerate(self.groups) if group.needed(start_ms, end_ms, name)]


def _min_max(column: pq.ColumnChunkMetaData) -> tuple[object, object]:
    stats = column.statistics
    if stats is None or not stats.has_min_max:
        return None, None
    return stats.min_raw, stats.max_raw


def summarize(metadata: pq.FileMetaData, columns: list[str]) -> Footer:
    wanted = set(columns)
    groups = []
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        by_path = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
        first, last = _min_max(by_path["timestamp"]) if "timestamp" in by_path else (None, None)
        low, high = _min_max(by_path["name"]) if "name" in by_path else (None, None)
        groups.append(Group(
            first if isinstance(first, int) else None, last if isinstance(last, int) else None,
            low.decode(errors="replace") if isinstance(low, bytes) else low if isinstance(low, str) else None,
            high.decode(errors="replace") if isinstance(high, bytes) else high if isinstance(high, str) else None,
            sum(c.total_compressed_size for path, c in by_path.items() if path.split(".", 1)[0] in wanted)))
    return Footer(metadata, tuple(groups))


class FooterCache:
    """Parsed footers by (path, size, mtime), least recently used dropped first; shared by a process' threads."""

    def __init__(self, filesystem: pafs.FileSystem, columns: list[str], capacity: int = CACHED_FOOTERS) -> None:
        self.filesystem = filesystem
        self.columns = columns
        self.capacity = capacity
        self._footers: collections.OrderedDict[tuple[str, int, object], Footer] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, info: pafs.FileInfo) -> tuple[Footer, bool]:
        """The file's footer, and whether it was fetched now (not cached)."""
        key = (info.path, info.size, info.mtime_ns)
        with self._lock:
            footer = self._footers.get(key)
            if footer is not None:
                self._footers.move_to_end(key)
                return footer, False
        with self.filesystem.open_input_file(info.path) as handle:
            footer = summarize(pq.ParquetFile(handle).metadata, self.columns)
        with self._lock:
            self._footers[key] = footer
            while len(self._footers) > self.capacity:
                self._footers.popitem(last=False)
        return footer, True
