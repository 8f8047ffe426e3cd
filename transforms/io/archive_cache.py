"""What the reader keeps between requests: Parquet footers, and the series of each row group read.

An archive file never changes once written (window files and compacted files are written atomically under
names of their own, and deleted, never rewritten), so both are cached by path, size and mtime:
- a file's parsed footer: a query pays for listing its partitions, not for fetching and parsing every file's
  footer again. Row groups are pruned from the cached statistics (time range, a pinned `__name__`), and the
  bytes a query fetches are counted from the same choice;
- a row group's series (select.GroupSeries: which series each row belongs to, each series' labels once): a
  later query of the group reads only its time, value, special and type columns, not the labels map that
  costs most to decode, as Prometheus' TSDB keeps its series index apart from the samples.
"""

from __future__ import annotations

import collections
import dataclasses
import threading

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from transforms.core.read.select import GroupSeries

# A Parquet file ends with its footer, a 4-byte footer length and the 4-byte magic "PAR1".
FOOTER_TAIL = 8
# Footers kept, by their stored size: a window file's is ~10 KiB, a compacted hour's ~2.7 KiB per row group
# (184 KiB for the benchmark's 10,000 series); parsed, they take a few times that.
CACHED_FOOTER_BYTES = 64 << 20
# Row groups' series, weighed as their local series plus runs (~40 bytes each, labels interned apart): ~80 MiB.
CACHED_SERIES_WEIGHT = 2_000_000
INTERNED_SERIES = 100_000  # distinct series' labels shared by the groups holding them (~0.5 KiB each)


@dataclasses.dataclass(frozen=True)
class Group:
    """What pruning needs of one row group; None where the file has no statistics (never pruned on them)."""

    first_ms: int | None
    last_ms: int | None
    name_min: str | None
    name_max: str | None
    column_bytes: dict[str, int]  # compressed bytes of each top-level column a query may read

    def read_bytes(self, columns: list[str]) -> int:
        return sum(self.column_bytes.get(c, 0) for c in columns)

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
            {c: sum(chunk.total_compressed_size for path, chunk in by_path.items() if path.split(".", 1)[0] == c)
             for c in columns}))
    return Footer(metadata, tuple(groups))


class FooterCache:
    """Parsed footers by (path, size, mtime), least recently used dropped first past `capacity` stored bytes;
    shared by a process' threads."""

    def __init__(self, filesystem: pafs.FileSystem, columns: list[str], capacity: int = CACHED_FOOTER_BYTES) -> None:
        self.filesystem = filesystem
        self.columns = columns
        self.capacity = capacity
        self._footers: collections.OrderedDict[tuple[str, int, object], Footer] = collections.OrderedDict()
        self._bytes = 0
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
            old = self._footers.pop(key, None)
            self._bytes += footer.size - (old.size if old is not None else 0)
            self._footers[key] = footer
            while self._bytes > self.capacity and len(self._footers) > 1:
                self._bytes -= self._footers.popitem(last=False)[1].size
        return footer, True


GroupKey = tuple[str, int, object, int]  # path, size, mtime, row group


class SeriesCache:
    """Row groups' series by (path, size, mtime, group), least recently used dropped first past `capacity` (in
    local series plus runs); a series' name and labels are shared by every group that holds it."""

    def __init__(self, capacity: int = CACHED_SERIES_WEIGHT, interned: int = INTERNED_SERIES) -> None:
        self.capacity = capacity
        self.interned_capacity = interned
        self._groups: collections.OrderedDict[GroupKey, GroupSeries] = collections.OrderedDict()
        self._weight = 0
        self._interned: dict[bytes, tuple[bytes, str, dict[str, str]]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(info: pafs.FileInfo, group: int) -> GroupKey:
        return info.path, info.size, info.mtime_ns, group

    def get(self, key: GroupKey) -> GroupSeries | None:
        with self._lock:
            found = self._groups.get(key)
            if found is not None:
                self._groups.move_to_end(key)
            return found

    def put(self, key: GroupKey, series: GroupSeries) -> GroupSeries:
        """Keep `series` (its labels interned); returns what is kept."""
        with self._lock:
            if len(self._interned) > self.interned_capacity:
                self._interned = {}  # groups kept so far keep their own references
            shared = [self._interned.setdefault(k, (k, n, labels))
                      for k, n, labels in zip(series.keys, series.names, series.labels, strict=True)]
            kept = dataclasses.replace(series, keys=[k for k, _, _ in shared], names=[n for _, n, _ in shared],
                                       labels=[labels for _, _, labels in shared])
            old = self._groups.pop(key, None)
            if old is not None:
                self._weight -= _weight(old)
            self._groups[key] = kept
            self._weight += _weight(kept)
            while self._weight > self.capacity and len(self._groups) > 1:
                _, dropped = self._groups.popitem(last=False)
                self._weight -= _weight(dropped)
            return kept


def _weight(series: GroupSeries) -> int:
    return len(series.keys) + len(series.run_starts)
