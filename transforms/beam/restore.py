"""Beam wrappers of the restore job: archive files -> selected requests -> each sink, in series order.

    metadata files --ReadMetadataFile, MergeMetadata--> tenant -> family -> (type, help, unit) (a side input)
    file paths --ReadArchiveFile--> (partition, tenant, Restored: columns, slow series, metadata) --per sink:
    ShardRestored--> ((tenant, shard), (partition, ShardChunk: columns, or protobuf pieces)) --GroupByKey-->
    SendRestored (hour after hour)

Delivery is the sinks' own machinery (the request builder of transforms/core/sink: relabel rules, sharding
by series, merging and sorting each series' samples, request-sized batches; the driver of
transforms/io/sink_driver.py: retries, split on 4xx, dead letters). The
restore only adds the order across files: a shard sends its partitions' hours one after another,
oldest first, so every series goes out in time order even when its samples span many files.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.shared import Shared

from transforms.beam.sinks import SinkMetrics
from transforms.core.archive.format import FORMATS, ArchiveFormat
from transforms.core.metadata import TYPE_NUMBERS, FamilyMetadata
from transforms.core.protocol import DEFAULT_TENANT, Protocol
from transforms.core.restore.selection import Restored, Selection, to_request
from transforms.core.sink.batching import ShardBatch, ShardChunk, spread_metadata
from transforms.core.sink.builder import RequestBuilder
from transforms.core.sink.columns import Columns
from transforms.core.sink.config import SinkConfig
from transforms.core.sink.stats import SinkStats
from transforms.io.deadletters import write_dead_letters
from transforms.io.files import read_whole
from transforms.io.http_sink import HttpService
from transforms.io.rate_limit import RateLimitedService, TokenBucket
from transforms.io.sink_driver import SinkDriver, wall_clock

__all__ = ["CorruptArchiveFile", "MergeMetadata", "ReadArchiveFile", "ReadMetadataFile", "RestoreProgress",
           "RestoreToSink", "format_of", "partition_of"]

log = logging.getLogger(__name__)
CORRUPT = "corrupt"


class CorruptArchiveFile(RuntimeError):
    """An archive file that cannot be read (raised at once under --fail_fast)."""


def format_of(path: str) -> ArchiveFormat:
    for fmt in FORMATS.values():
        if path.endswith(fmt.suffix):
            return fmt
    raise CorruptArchiveFile(f"{path}: not a file of any archive format ({', '.join(FORMATS)})")


def partition_of(path: str) -> tuple[str, str, str]:
    """(tenant, date, hour) from a path's tenant=/date=/hour= folders."""
    found = {}
    for part in path.split("/"):
        key, sep, value = part.partition("=")
        if sep and key in ("tenant", "date", "hour"):
            found[key] = value
    return found.get("tenant", DEFAULT_TENANT), found.get("date", ""), found.get("hour", "")


class RestoreProgress:
    """Live counters of one restore, shared by the DoFns of a worker process (Beam's Shared) and, on a
    local runner, by the launcher's progress bar. Also the process's rate limiter (a token bucket, applied
    by the sink service layer of transforms/io/rate_limit.py)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files_read = 0
        self.samples_selected = 0
        self.stats = SinkStats()
        self.bucket = TokenBucket()

    def add_read(self, samples: int) -> None:
        with self.lock:
            self.files_read += 1
            self.samples_selected += samples


class ReadMetadataFile(beam.DoFn):
    """A companion metadata file (ARCHIVE/_metadata/...) -> (tenant, {family: (ms, type, help, unit)}).
    An unreadable one is named and skipped (or stops the job under --fail_fast), like a sample file."""

    def __init__(self, fail_fast: bool) -> None:
        self.fail_fast = fail_fast
        self.corrupt = Metrics.counter("restore", "files_corrupt")

    def process(self, path: str) -> Iterator[Any]:
        try:
            records = format_of(path).read_metadata(read_whole(path))
        except Exception as exc:
            message = f"{path}: {type(exc).__name__}: {exc}"
            if self.fail_fast:
                raise CorruptArchiveFile(message) from exc
            log.error("restore: skipping unreadable metadata file %s", message)
            self.corrupt.inc()
            yield beam.pvalue.TaggedOutput(CORRUPT, message)
            return
        latest: dict[str, tuple[int, int, str, str]] = {}
        for r in records:
            if r.name not in latest or r.ms >= latest[r.name][0]:
                latest[r.name] = (r.ms, TYPE_NUMBERS.get(r.type, 0), r.help, r.unit)
        yield partition_of(path)[0], latest


class MergeMetadata(beam.CombineFn):
    """Every selected partition's metadata -> tenant -> family -> (type, help, unit): the latest seen wins."""

    def create_accumulator(self) -> dict[str, dict[str, tuple[int, int, str, str]]]:
        return {}

    def add_input(self, acc, element):
        tenant, latest = element
        known = acc.setdefault(tenant, {})
        for family, entry in latest.items():
            if family not in known or entry[0] >= known[family][0]:
                known[family] = entry
        return acc

    def merge_accumulators(self, accumulators):
        merged: dict[str, dict[str, tuple[int, int, str, str]]] = {}
        for acc in accumulators:
            for tenant, latest in acc.items():
                self.add_input(merged, (tenant, latest))
        return merged

    def extract_output(self, acc) -> dict[str, dict[str, FamilyMetadata]]:
        return {tenant: {family: entry[1:] for family, entry in known.items()} for tenant, known in acc.items()}


class ReadArchiveFile(beam.DoFn):
    """A file -> (partition key, tenant, Restored: its selected samples as columns, its series with histograms
    or exemplars, their metadata). `metadata` (a side input) is what the archive's metadata records say per
    tenant."""

    def __init__(self, selection: Selection, fail_fast: bool, shared: Shared, tag: str) -> None:
        self.selection = selection
        self.fail_fast = fail_fast
        self.shared = shared
        self.tag = tag
        self.files = Metrics.counter("restore", "files_read")
        self.corrupt = Metrics.counter("restore", "files_corrupt")
        self.selected = Metrics.counter("restore", "samples_selected")

    def setup(self) -> None:
        self.progress = self.shared.acquire(RestoreProgress, self.tag)

    def process(self, path: str, metadata: dict[str, dict[str, FamilyMetadata]] | None = None) -> Iterator[Any]:
        tenant, date, hour = partition_of(path)
        try:
            restored = to_request(format_of(path).points(read_whole(path)), self.selection,
                                  (metadata or {}).get(tenant))
        except Exception as exc:  # unreadable, truncated, not ours: name it, skip it (or stop at once)
            message = f"{path}: {type(exc).__name__}: {exc}"
            if self.fail_fast:
                raise CorruptArchiveFile(message) from exc
            log.error("restore: skipping unreadable archive file %s", message)
            self.corrupt.inc()
            self.progress.add_read(0)
            yield beam.pvalue.TaggedOutput(CORRUPT, message)
            return
        self.files.inc()
        self.selected.inc(restored.samples)
        self.progress.add_read(restored.samples)
        if restored.series:
            yield f"{date}T{hour}", tenant, restored


class ShardRestored(beam.DoFn):
    """Through the sink's own sharding (relabel rules, stable shard of each series' label bytes), straight from
    the selected columns: no request is encoded, compressed and decoded again on the way. Series whose tenant
    label names an invalid tenant are dead-lettered here, as the live sinks do, and the rest restored."""

    def __init__(self, sink: SinkConfig, dead_letter_path: str) -> None:
        self.sink = sink
        self.dead_letter_path = dead_letter_path

    def setup(self) -> None:
        self.builder = RequestBuilder(self.sink, clock=wall_clock)
        self.metrics = SinkMetrics(self.sink)

    def process(self, element: tuple[str, str, Restored]) -> Iterator[Any]:
        partition, tenant, restored = element
        samples = Columns(restored.sample_series, restored.timestamps, restored.values, restored.starts)
        batches, dead = self.builder.shard_selected(tenant, restored.keys, restored.labels, samples, restored.slow,
                                                    restored.metadata)
        if dead:  # only a tenant label naming an invalid tenant refuses a series here (the builder logged it)
            self.builder.stats.add(requests_dead_lettered=len(dead))
            path = write_dead_letters(self.dead_letter_path, dead, sink=self.sink.name)
            log.info("restore: sink %s: %d dead letter(s) in %s", self.sink.name, len(dead), path)
        self.metrics.publish(self.builder.stats)  # samples dropped by rules or dead-lettered, for the summary
        if self.sink.protocol is Protocol.V2:  # every shard attaches its series' metadata itself
            spread_metadata(batches, self.sink.queue.shards)
        for key, batch in batches.items():
            yield key, (partition, batch.export())


class SendRestored(beam.DoFn):
    """One (tenant, shard): its partitions oldest first, each through SinkDriver.send_shard."""

    def __init__(self, sink: SinkConfig, dead_letter_path: str, rate_limit: float | None, shared: Shared,
                 tag: str) -> None:
        self.sink = sink
        self.dead_letter_path = dead_letter_path
        self.rate_limit = rate_limit
        self.shared = shared
        self.tag = tag

    def setup(self) -> None:
        self.progress = self.shared.acquire(RestoreProgress, self.tag)
        self.progress.bucket.rate = self.rate_limit
        self.driver = SinkDriver(RequestBuilder(self.sink, clock=wall_clock),
                                 RateLimitedService(HttpService(self.sink), self.progress.bucket))
        self.metrics = SinkMetrics(self.sink)
        self.reported = dict.fromkeys(SinkStats.FIELDS, 0)

    def _report(self) -> None:
        """This driver's counts -> Beam metrics (the summary) and the process's progress (the bar)."""
        self.metrics.publish(self.driver.stats)
        counts = self.driver.stats.snapshot()
        self.progress.stats.add(**{k: counts[k] - self.reported[k] for k in SinkStats.FIELDS})
        self.reported = {k: counts[k] for k in SinkStats.FIELDS}

    def process(self, element: tuple[tuple[str, int], Iterable[tuple[str, ShardChunk]]]) -> Iterator[str]:
        (tenant, _), chunks = element
        by_partition: dict[str, list[ShardChunk]] = defaultdict(list)
        for partition, chunk in chunks:
            by_partition[partition].append(chunk)
        for partition in sorted(by_partition):
            series = self.driver.builder.series
            series.make_room()  # between partitions only: a batch holds ids of the output series
            batch = ShardBatch()
            for chunk in by_partition[partition]:
                batch.add_chunk(chunk, series)
            try:
                dead = self.driver.send_shard(tenant, batch)
            finally:
                self._report()
            path = write_dead_letters(self.dead_letter_path, dead, sink=self.sink.name)
            if path:
                # the driver logged each give-up and the summary names the folder: details only on request
                log.info("restore: sink %s: %d dead letter(s) in %s", self.sink.name, len(dead), path)
                yield path


class RestoreToSink(beam.PTransform):
    """Selected requests -> one sink. Outputs the dead-letter files written."""

    def __init__(self, sink: SinkConfig, dead_letter_path: str, rate_limit: float | None, shared: Shared,
                 tag: str) -> None:
        super().__init__()
        self.sink, self.dead_letter_path, self.rate_limit, self.shared, self.tag = (
            sink, dead_letter_path, rate_limit, shared, tag)

    def expand(self, requests):
        return (requests
                | "Shard" >> beam.ParDo(ShardRestored(self.sink, self.dead_letter_path))
                | "GroupByShard" >> beam.GroupByKey()
                | "SendInOrder" >> beam.ParDo(SendRestored(self.sink, self.dead_letter_path, self.rate_limit,
                                                           self.shared, self.tag)))
