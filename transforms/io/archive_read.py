"""Reading the Parquet archive for remote-read: list a query's partitions, read only what it needs.

Local paths, gs:// and s3:// go through pyarrow's filesystems (`archive_filesystem`); gs:// folders are
listed with the Cloud Storage client (`GcsFolders`). NDJSON files in the same partitions are not read
(only *.parquet).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from transforms.core.archive.compaction import CompactionError, Marker, is_marker, live_files
from transforms.core.archive.parquet import SCHEMA
from transforms.core.archive.records import RecordError
from transforms.core.read.matchers import Matcher, required_name
from transforms.core.read.select import (
    COLUMNS,
    DAY_MS,
    HOUR_MS,
    GroupSeries,
    Series,
    SeriesCollector,
    group_series,
    overlaps,
    partition_start_ms,
    row_mask,
)
from transforms.io.archive_cache import FooterCache, SeriesCache

# What a row group is read for once its series are cached (no name, no labels).
VALUE_COLUMNS = ["timestamp", "value", "special", "type"]


@dataclasses.dataclass
class ReadStats:
    files: int = 0
    rows: int = 0
    bytes: int = 0  # Parquet bytes fetched: footers not cached yet and the read columns' chunks of the groups read


def archive_filesystem(archive_path: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for a local path, gs:// or s3://, and the root inside it. Like the Google Cloud
    client libraries, gs:// honours STORAGE_EMULATOR_HOST (a GCS emulator, anonymously); s3:// takes
    AWS_ENDPOINT_URL, as boto3 does."""
    if "://" not in archive_path:
        return pafs.LocalFileSystem(), archive_path
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if archive_path.startswith("gs://") and emulator:
        scheme, _, host = emulator.rpartition("://")
        return pafs.GcsFileSystem(anonymous=True, scheme=scheme or "http", endpoint_override=host), \
            archive_path.removeprefix("gs://")
    return pafs.FileSystem.from_uri(archive_path)


class GcsFolders:
    """The folder names under a gs:// path. pyarrow's GCS listing returns only folders that have marker
    objects (apache/arrow#35993); the archive's writers create none, so the folders come from a delimiter
    listing of the JSON API (the common prefixes), as `gsutil ls` finds them."""

    def __init__(self) -> None:
        from google.cloud import storage  # only for gs:// archives

        self.client = storage.Client()  # STORAGE_EMULATOR_HOST: the emulator, anonymously

    def __call__(self, path: str) -> list[str]:
        bucket, _, prefix = path.partition("/")
        listing = self.client.list_blobs(bucket, prefix=f"{prefix.rstrip('/')}/" if prefix else None, delimiter="/")
        for _ in listing.pages:  # the prefixes are collected page by page
            pass
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in listing.prefixes)


class ArchiveReader:
    def __init__(self, archive_path: str) -> None:
        self.filesystem, root = archive_filesystem(archive_path)
        self.root = root.rstrip("/")
        self.gcs_folders = GcsFolders() if archive_path.startswith("gs://") else None
        self.footers = FooterCache(self.filesystem, COLUMNS)
        self.series = SeriesCache()

    def reachable(self) -> bool:
        """The archive root exists (readiness)."""
        return self.filesystem.get_file_info(self.root).type == pafs.FileType.Directory

    def _folders(self, path: str) -> list[str]:
        if self.gcs_folders is not None:
            return self.gcs_folders(path)
        selector = pafs.FileSelector(path, allow_not_found=True)
        return sorted(info.base_name for info in self.filesystem.get_file_info(selector)
                      if info.type == pafs.FileType.Directory)

    def files(self, tenant: str, start_ms: int, end_ms: int) -> list[str]:
        """Every Parquet file in the tenant's hour partitions that [start_ms, end_ms] touches (paths)."""
        return [info.path for info in self.file_infos(tenant, start_ms, end_ms)]

    def file_infos(self, tenant: str, start_ms: int, end_ms: int) -> list[pafs.FileInfo]:
        """Every Parquet file in the tenant's hour partitions that [start_ms, end_ms] touches. The date and
        hour folders that exist are listed (one listing per level), so a wide range costs no more requests
        than the archive has folders in it."""
        found = []
        tenant_path = f"{self.root}/tenant={tenant}"
        for date in self._folders(tenant_path):
            if not overlaps(partition_start_ms(date), DAY_MS, start_ms, end_ms):
                continue
            for hour in self._folders(f"{tenant_path}/{date}"):
                if not overlaps(partition_start_ms(date, hour), HOUR_MS, start_ms, end_ms):
                    continue
                found += self._live_parquet(f"{tenant_path}/{date}/{hour}")
        return found

    def _live_parquet(self, partition: str) -> list[pafs.FileInfo]:
        """A partition's Parquet files as the compaction marker rule has them: the window files or their
        compacted replacement, never both (transforms/core/archive/compaction.py)."""
        listed = {info.path: info for info in self.filesystem.get_file_info(pafs.FileSelector(partition))
                  if info.type == pafs.FileType.File}
        markers = {}
        for path in filter(is_marker, listed):
            with self.filesystem.open_input_file(path) as handle:
                try:
                    markers[path] = Marker.from_json(handle.read(), path)
                except CompactionError as exc:
                    raise ArchiveUnreadable(str(exc)) from exc
        return [listed[p] for p in sorted(live_files([p for p in listed if p.endswith(".parquet")], markers))]

    def groups(self, files: list[pafs.FileInfo], start_ms: int, end_ms: int, matchers: tuple[Matcher, ...],
               stats: ReadStats, wants: Callable[[GroupSeries], bool] = lambda _: True,
               ) -> Iterator[tuple[GroupSeries, pa.Table, np.ndarray]]:
        """Each row group the cached footers' statistics leave (time range, a pinned name) and, once its series
        are cached, that holds a series `wants`: its series, its rows (COLUMNS the first time, VALUE_COLUMNS
        once its series are cached) and which of them pass the row filter (time range, float samples or
        native histograms, the pinned name)."""
        name = required_name(matchers)
        for info in files:
            footer, fetched = self.footers.get(info)
            if fetched:
                stats.bytes += footer.size
            groups = footer.groups_for(start_ms, end_ms, name)
            if not groups:
                continue
            with self.filesystem.open_input_file(info.path) as handle:
                parquet = pq.ParquetFile(handle, metadata=footer.metadata, pre_buffer=True)
                present = set(parquet.schema_arrow.names)
                for group in groups:
                    key = self.series.key(info, group)
                    series = self.series.get(key)
                    if series is not None and not wants(series):
                        continue  # e.g. job="api" in a group of other jobs' series: nothing of it is read
                    columns = COLUMNS if series is None else VALUE_COLUMNS
                    stats.bytes += footer.groups[group].read_bytes(columns)
                    table = _with_columns(parquet.read_row_group(group, columns=[c for c in columns if c in present]),
                                          columns)
                    if series is None:
                        series = self.series.put(key, group_series(table))
                    kept = row_mask(table, start_ms, end_ms, None).to_numpy(zero_copy_only=False)
                    if name is not None:
                        kept &= series.rows_named(name)
                    stats.rows += int(kept.sum())
                    yield series, table, kept

    def read(self, tenant: str, start_ms: int, end_ms: int, matchers: tuple[Matcher, ...],
             max_samples: int, stats: ReadStats) -> list[Series]:
        """The float samples of matching series in [start_ms, end_ms] (partitions pruned by tenant and hour,
        row groups by statistics), only the needed columns. Raises SampleLimit past max_samples samples."""
        files = self.file_infos(tenant, start_ms, end_ms)
        stats.files += len(files)
        if not files:
            return []
        collector = SeriesCollector(matchers)
        try:
            for series, table, kept in self.groups(files, start_ms, end_ms, matchers, stats, collector.wants):
                collector.add_rows(series, table, kept)
                if collector.samples > max_samples:
                    raise SampleLimit(collector.samples)
            if collector.histogram_series:
                raise NativeHistograms(len(collector.histogram_series), collector.histogram_example())
        except (pa.ArrowException, OSError, RecordError) as exc:
            # an answer without this file's samples would look complete: fail the query, naming the problem
            raise ArchiveUnreadable(f"archive files of tenant {tenant!r} unreadable: {exc}") from exc
        return collector.series()


def _with_columns(table: pa.Table, columns: list[str]) -> pa.Table:
    """Rows read as `columns` of the archive's schema: a column the file lacks as nulls, `name` as a plain
    string if the file stored a dictionary type."""
    schema = pa.schema([SCHEMA.field(c) for c in columns])
    if table.schema.equals(schema):
        return table
    return pa.Table.from_arrays([table.column(f.name).cast(f.type) if f.name in table.column_names
                                 else pa.nulls(len(table), f.type) for f in schema], schema=schema)


class ArchiveUnreadable(Exception):
    """A file of the query's partitions could not be read (corrupt, foreign or unreachable)."""


class NativeHistograms(Exception):
    """Matching series hold native histograms, which the reader does not serve yet."""

    def __init__(self, series: int, example: str) -> None:
        super().__init__(f"{series} series with native histograms, e.g. {example}")
        self.series, self.example = series, example


class SampleLimit(Exception):
    """More samples than allowed matched the query (counted as batches are read, before dedup)."""

    def __init__(self, samples: int) -> None:
        super().__init__(f"{samples} samples")
        self.samples = samples
