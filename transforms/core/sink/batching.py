"""Sharding, per-series ordering and request-sized batches for the sinks.

Prometheus rejects a whole request for one out-of-order sample, so: a series always lands on the
same shard (a stable hash of its exact label bytes, never Python's salted hash()), a shard sends
its requests one after another, and within a shard's batch every series' samples are merged and
sorted by timestamp. Parallelism is across shards only.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

from transforms.core.metadata import MetadataLookup
from transforms.core.protocol import Protocol, float_bits
from transforms.core.sink.columns import ColumnChunk, ColumnRequest, ColumnShard, SinkSeries
from transforms.core.sink.request import encode_payload
from transforms.core.wire.proto import remote_v1_pb2

TimeSeries = remote_v1_pb2.TimeSeries
# One shard's part between workers: the protobuf pieces' keys, a 1.0 request of them and the metadata, columns.
ShardChunk = tuple[list[bytes], bytes, ColumnChunk | None]


def shard_of(key: bytes, shards: int) -> int:
    return zlib.crc32(key) % shards


def points(series: TimeSeries) -> int:
    """What a series carries that counts against max samples: float and histogram samples."""
    return len(series.samples) + len(series.histograms)


def _sorted_unique(items: list[Any], bits: bool) -> list[Any]:
    """Stable sort by timestamp; exact repeats (a redelivered message) are sent once."""
    items.sort(key=lambda s: s.timestamp)
    out: list[Any] = []
    seen: set[Any] = set()
    for item in items:
        identity = (item.timestamp, float_bits(item.value)) if bits else item.SerializeToString(deterministic=True)
        if identity not in seen:
            seen.add(identity)
            out.append(item)
    return out


def merge(parts: list[TimeSeries]) -> TimeSeries:
    """One series from several pieces of the same label set, its points in timestamp order."""
    if len(parts) == 1 and _in_order(parts[0]):
        return parts[0]
    merged = TimeSeries()
    merged.labels.extend(parts[0].labels)
    merged.samples.extend(_sorted_unique([s for p in parts for s in p.samples], bits=True))
    merged.histograms.extend(_sorted_unique([h for p in parts for h in p.histograms], bits=False))
    merged.exemplars.extend(_sorted_unique([e for p in parts for e in p.exemplars], bits=False))
    return merged


def _in_order(series: TimeSeries) -> bool:
    for field in (series.samples, series.histograms):
        stamps = [s.timestamp for s in field]
        if any(a >= b for a, b in zip(stamps, stamps[1:], strict=False)):
            return False
    return True


def spread_metadata(batches: dict[tuple[str, int], ShardBatch], shards: int) -> None:
    """A 2.0 sink attaches each series' family metadata itself, in whichever shard sends the series: give every
    shard of a tenant the metadata entries its messages carried (they land on shard 0 for a 1.0 sink)."""
    by_tenant: dict[str, dict[str, remote_v1_pb2.MetricMetadata]] = {}
    for (tenant, _), batch in batches.items():
        by_tenant.setdefault(tenant, {}).update(batch.metadata)
    for tenant, metadata in by_tenant.items():
        if metadata:
            for shard in range(shards):
                batches.setdefault((tenant, shard), ShardBatch()).metadata.update(metadata)


def tenant_metadata_everywhere(batches: dict[tuple[str, int], ShardBatch]) -> None:
    """With tenants from a label, a message's metadata belongs to every tenant its series went to: give each
    tenant's shard 0 all of it (a 1.0 sink sends it there; `spread_metadata` then reaches a 2.0 sink's shards)."""
    metadata: dict[str, remote_v1_pb2.MetricMetadata] = {}
    for batch in batches.values():
        metadata.update(batch.metadata)
    if metadata:
        for tenant in {tenant for tenant, _ in batches}:
            batches.setdefault((tenant, 0), ShardBatch()).metadata.update(metadata)


class ShardBatch:
    """One (tenant, shard) in a flush: float-only series as columns (`columns`, the common case), and
    series carrying histograms or exemplars as protobuf pieces keyed by label bytes, in arrival order.

    When a flush has both, the columns join the protobuf pieces (one series' samples must be merged
    and ordered together), and the whole shard takes the Python path.
    """

    def __init__(self, columns: ColumnShard | None = None) -> None:
        self.series: dict[bytes, list[TimeSeries]] = {}
        self.metadata: dict[str, remote_v1_pb2.MetricMetadata] = {}  # family -> latest entry
        self.columns = columns

    def add(self, key: bytes, series: TimeSeries) -> None:
        self.series.setdefault(key, []).append(series)

    def add_metadata(self, entry: remote_v1_pb2.MetricMetadata) -> None:
        self.metadata[entry.metric_family_name] = entry

    def __len__(self) -> int:
        return len(self.series) + (1 if self.columns is not None and len(self.columns) else 0)

    def export(self) -> ShardChunk:
        """For another worker (Beam): protobuf pieces with their keys and the metadata, and the columns."""
        keys: list[bytes] = []
        request = remote_v1_pb2.WriteRequest(metadata=list(self.metadata.values()))
        for key, parts in self.series.items():
            for part in parts:
                keys.append(key)
                request.timeseries.append(part)
        return keys, request.SerializeToString(), None if self.columns is None else self.columns.export()

    def add_chunk(self, chunk: ShardChunk, sink_series: SinkSeries) -> None:
        keys, data, columns = chunk
        request = remote_v1_pb2.WriteRequest.FromString(data)
        for key, series in zip(keys, request.timeseries, strict=True):
            self.add(key, series)
        for entry in request.metadata:
            self.add_metadata(entry)
        if columns is not None:
            if self.columns is None:
                self.columns = ColumnShard(sink_series)
            self.columns.add_chunk(columns)

    def plan(self, max_points: int, max_bytes: int) -> Iterator[SeriesRequest | ColumnRequest]:
        """What the shard sends, request by request: compiled from the columns unless protobuf pieces are here."""
        if self.columns is not None and len(self.columns):
            if not self.series:
                yield from self.columns.requests(max_points, max_bytes)
                return
            for key, piece in self.columns.to_series():
                self.add(key, piece)
            self.columns = None
        for series in self.requests(max_points, max_bytes):
            yield SeriesRequest(series)

    def requests(self, max_points: int, max_bytes: int) -> Iterator[list[TimeSeries]]:
        """Request-sized lists of merged series; a series too big for one request is cut in time order."""
        batch: list[TimeSeries] = []
        batch_points = batch_bytes = 0
        for parts in self.series.values():
            for piece in cut(merge(parts), max_points):
                size = piece.ByteSize()
                if batch and (batch_points + points(piece) > max_points or batch_bytes + size > max_bytes):
                    yield batch
                    batch, batch_points, batch_bytes = [], 0, 0
                batch.append(piece)
                batch_points += points(piece)
                batch_bytes += size
        if batch:
            yield batch


def cut(series: TimeSeries, max_points: int) -> list[TimeSeries]:
    """A series in pieces of at most max_points, earliest first (exemplars ride with the first piece)."""
    if points(series) <= max_points:
        return [series]
    pieces: list[TimeSeries] = []
    for field in ("samples", "histograms"):
        values = list(getattr(series, field))
        for i in range(0, len(values), max_points):
            piece = TimeSeries()
            piece.labels.extend(series.labels)
            getattr(piece, field).extend(values[i:i + max_points])
            pieces.append(piece)
    if series.exemplars:
        pieces[0].exemplars.extend(series.exemplars)
    return pieces


def halves(series: list[TimeSeries]) -> tuple[list[TimeSeries], list[TimeSeries]] | None:
    """Split a rejected request to isolate what the sink refused: by series, then by points."""
    if len(series) > 1:
        middle = len(series) // 2
        return series[:middle], series[middle:]
    only = series[0]
    total = points(only)
    if total <= 1:
        return None
    first, second = TimeSeries(), TimeSeries()
    first.labels.extend(only.labels)
    second.labels.extend(only.labels)
    stream = [("samples", s) for s in only.samples] + [("histograms", h) for h in only.histograms]
    for i, (field, value) in enumerate(stream):
        getattr(first if i < total // 2 else second, field).append(value)
    first.exemplars.extend(only.exemplars)
    return [first], [second]


class SeriesRequest:
    """One request of protobuf series (the path for histograms and exemplars); same face as ColumnRequest."""

    def __init__(self, series: list[TimeSeries]) -> None:
        self.series = series

    @property
    def points(self) -> int:
        return sum(points(s) for s in self.series)

    def sent_counts(self) -> tuple[int, int, int]:
        return (sum(len(s.samples) for s in self.series), sum(len(s.histograms) for s in self.series),
                sum(len(s.exemplars) for s in self.series))

    def encode(self, protocol: Protocol, lookup: MetadataLookup) -> bytes:
        return encode_payload(protocol, self.series, (), lookup)

    def halves(self) -> tuple[SeriesRequest, SeriesRequest] | None:
        split = halves(self.series) if self.series else None
        return None if split is None else (SeriesRequest(split[0]), SeriesRequest(split[1]))
