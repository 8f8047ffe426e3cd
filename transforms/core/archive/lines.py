"""Archive lines from a columnar batch, in compiled code (transforms/core/wire/_wire_lines.c).

Byte for byte the whole-request metric_to_log conversion (tests/reference/metric_to_log.py), one
newline-terminated block per partition (tenant, UTC date, UTC hour of each sample's own timestamp): the unit
that flows through Beam, never a line. Per series, the JSON head is made once by the decoder's series table
and the kind prefix once per metadata change. In a request whose series carry native histograms or exemplars
(the decoder's side data), every float sample is still formatted here; only those series' histogram and
exemplar lines come from metric_to_log's Python (`side_lines`, each from its own TimeSeries bytes), spliced in
after the series' samples, so every line and its place in the block are what metric_to_log writes for the
whole request.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np

from transforms.core.archive.metric_to_log import ConversionError, Partition, PartitionLines, side_lines, value_kind
from transforms.core.metadata import TYPE_NAMES, FamilyMetadata, MetadataStore
from transforms.core.protocol import Protocol
from transforms.core.wire import _wire
from transforms.core.wire.batch import Batch, SeriesTable, column
from transforms.core.wire.validation import NameValidation


class LineBlock(NamedTuple):
    """Newline-terminated ndjson lines of one partition, and how many."""

    data: bytes
    lines: int

    @classmethod
    def of_records(cls, records: list[str]) -> LineBlock:
        return cls(("\n".join(records) + "\n").encode() if records else b"", len(records))

    def records(self) -> list[str]:
        """The records (JSON object texts), for formats that are not ndjson."""
        # split on "\n" only: JSON strings may hold U+2028 etc., which str.splitlines() would cut at
        return self.data.decode().split("\n")[:-1]


class PackedBlock(NamedTuple):
    """A LineBlock as its archive format packs it for the group-by-partition (ArchiveFormat.pack):
    the format's own bytes for those lines (for ndjson, one gzip member), and how many lines."""

    data: bytes
    lines: int


def _kind_prefix(kind: str) -> bytes:
    return f'"kind":"absolute","{kind}":{{"value":'.encode()


KIND_PREFIXES = {_kind_prefix(kind): kind for kind in ("counter", "gauge")}  # prefix -> 'counter' | 'gauge'


class _TenantKinds:
    """Per slot of a tenant's series table, the kind prefix of its lines (from the remembered 1.0 types)."""

    def __init__(self) -> None:
        self.kinds: list[bytes] = []
        self.by_name: dict[str, bytes] = {}
        self.names: list[str] | None = None  # the table's container the slots index
        self.version = -1

    def for_batch(self, batch: Batch, store: MetadataStore, tenant: str) -> list[bytes]:
        version = store.version(tenant)
        if self.names is not batch.names or self.version != version:
            self.kinds, self.by_name, self.names, self.version = [], {}, batch.names, version
        names, by_name = batch.names, self.by_name
        for slot in range(len(self.kinds), len(names)):
            name = names[slot]
            prefix = by_name.get(name)
            if prefix is None:
                prefix = by_name[name] = _kind_prefix(value_kind(store.type_of(tenant, name), name))
            self.kinds.append(prefix)
        return self.kinds


class BatchLines:
    """Owned by whoever converts (a DoFn's setup): per tenant, the series table the pipeline decodes with
    (UTF-8 names: whatever the receiver accepted must be archived) and the kind prefixes by slot."""

    def __init__(self, store: MetadataStore, series_limit: int = 500_000) -> None:
        self.store = store
        self.series_limit = series_limit
        self._tables: dict[str, SeriesTable] = {}
        self._kinds: dict[str, _TenantKinds] = {}
        # per tenant: the series table's containers, and per slot the hour its 2.0 metadata was last read
        self._metadata_hours: dict[str, tuple[list[str] | None, np.ndarray]] = {}

    def forget_metadata(self) -> None:
        """A bundle that did not finish: read every series' 2.0 metadata again."""
        self._metadata_hours.clear()

    def metadata(self, batch: Batch, tenant: str, hour: int) -> dict[str, FamilyMetadata]:
        """family -> (type, help, unit) the request tells (1.0 metadata entries, 2.0 per-series metadata),
        for the caller to archive. 2.0 series whose metadata was read this hour are skipped by a numpy
        look-up per series (the protobuf message is parsed only for the others); floats are never touched."""
        if not batch.counts.metadata:
            return {}
        if batch.protocol is Protocol.V1:
            return {m.metric_family_name: (m.type, m.help, m.unit) for m in batch.message.metadata}
        slots = np.frombuffer(batch.series_slot, np.int32)
        names, hours = self._metadata_hours.get(tenant, (None, np.zeros(0, np.int64)))
        if names is not batch.names:  # a renewed series table: its slots mean other label sets
            hours = np.zeros(0, np.int64)
        if len(hours) < len(batch.names):
            grown = np.full(max(len(batch.names), 2 * len(hours)), -1, np.int64)
            grown[:len(hours)] = hours
            hours = grown
        self._metadata_hours[tenant] = (batch.names, hours)
        fresh = np.flatnonzero(hours[slots] != hour)
        if not len(fresh):
            return {}
        hours[slots[fresh]] = hour
        message = batch.message
        symbols = message.symbols
        out: dict[str, FamilyMetadata] = {}
        for index in fresh.tolist():
            series = message.timeseries[index]
            if series.HasField("metadata"):
                m = series.metadata
                if m.type or m.help_ref or m.unit_ref:
                    out[batch.names[slots[index]]] = (m.type, symbols[m.help_ref], symbols[m.unit_ref])
        return out

    def table(self, tenant: str) -> SeriesTable:
        table = self._tables.get(tenant)
        if table is None:
            table = self._tables[tenant] = SeriesTable(NameValidation.UTF8, self.series_limit)
            self._kinds[tenant] = _TenantKinds()
        return table

    def convert(self, batch: Batch, tenant: str) -> dict[Partition, LineBlock]:
        """The batch's lines by partition; raises ConversionError (timestamps outside datetime's range)."""
        kinds, kind_index = self.series_kinds(batch, tenant)
        starts, created = (None, None) if batch.protocol is Protocol.V1 else (batch.starts, batch.created)

        def floats(lo: int, hi: int) -> list[tuple[int, bytes, int]]:
            """Lines of float samples [lo, hi), compiled: views of the columns, no copy."""
            cut = (slice(4 * lo, 4 * hi), slice(8 * lo, 8 * hi))
            try:
                return _wire.format_lines(batch.heads, kinds, batch.series_slot, kind_index,
                                          memoryview(batch.sample_series)[cut[0]],
                                          memoryview(batch.timestamps)[cut[1]], memoryview(batch.values)[cut[1]],
                                          None if starts is None else memoryview(starts)[cut[1]], created)
            except OverflowError as exc:
                raise ConversionError(str(exc)) from exc

        if not batch.slow:
            return {hour_partition(tenant, hour): LineBlock(data, lines)
                    for hour, data, lines in floats(0, len(batch.timestamps) // 8)}
        return self._with_side_series(batch, tenant, floats)

    def side_blocks(self, batch: Batch, tenant: str) -> dict[Partition, LineBlock]:
        """Only the histogram and exemplar lines of the batch's slow series (Parquet takes its float rows
        from the columns)."""
        return self._with_side_series(batch, tenant, None) if batch.slow else {}

    @staticmethod
    def _with_side_series(batch: Batch, tenant: str, floats: Callable[[int, int], list[tuple[int, bytes, int]]] | None
                          ) -> dict[Partition, LineBlock]:
        """A request whose slow series carry histograms or exemplars: every float sample is formatted in compiled
        code (`floats`), in runs that end with a slow series' own samples; after each run, that series' histogram
        and exemplar lines (metric_to_log.side_lines, from its own TimeSeries bytes). Each partition's lines are
        thus in metric_to_log's order: series by series, a series' samples, then histograms, then exemplars.
        Without `floats`, the histogram and exemplar lines alone."""
        sample_series = np.frombuffer(batch.sample_series, np.uint32)  # ascending: samples come series by series
        ends = np.searchsorted(sample_series, np.asarray(batch.slow, np.uint32), side="right").tolist()
        symbols = None if batch.protocol is Protocol.V1 else batch.symbols
        parts: dict[Partition, list[bytes]] = {}
        counts: dict[Partition, int] = {}
        by_hour: dict[int, Partition] = {}

        def add(partition: Partition, data: bytes, lines: int) -> None:
            parts.setdefault(partition, []).append(data)
            counts[partition] = counts.get(partition, 0) + lines

        done = 0
        for (index, series), end in zip(batch.side_series(), ends, strict=True):
            if floats is not None and end > done:
                for hour, data, lines in floats(done, end):
                    partition = by_hour.get(hour) or by_hour.setdefault(hour, hour_partition(tenant, hour))
                    add(partition, data, lines)
                done = end
            side = PartitionLines(tenant)
            head = batch.heads[batch_slot(batch, index)].decode()
            side_lines(head, series, symbols, side)
            for partition, records in side.by_partition.items():
                if records:  # (a start timestamp's hour is listed too, empty: not a file to write)
                    add(partition, ("\n".join(records) + "\n").encode(), len(records))
        if floats is not None and done < len(sample_series):
            for hour, data, lines in floats(done, len(sample_series)):
                add(by_hour.get(hour) or hour_partition(tenant, hour), data, lines)
        return {partition: LineBlock(b"".join(chunks), counts[partition]) for partition, chunks in parts.items()}

    def series_kinds(self, batch: Batch, tenant: str) -> tuple[list[bytes], bytes]:
        """The kind prefixes of a float-only batch and, per series of the request, the index of its prefix
        (1.0: the remembered types by slot, updated from the request's own metadata first; 2.0: its types)."""
        if batch.protocol is Protocol.V1:
            if batch.families:
                self.store.update(tenant, {family: TYPE_NAMES.get(number, "unknown")
                                           for family, number in batch.families})
            self.table(tenant)
            return self._kinds[tenant].for_batch(batch, self.store, tenant), batch.series_slot
        return self._v2_kinds(batch)

    @staticmethod
    def _v2_kinds(batch: Batch) -> tuple[list[bytes], bytes]:
        """2.0 types come with each series: a kind prefix per distinct (type, name) of the request."""
        kinds: list[bytes] = []
        seen: dict[tuple[int, int], int] = {}
        index = []
        for slot, number in zip(column(batch, "series_slot"), column(batch, "types"), strict=True):
            found = seen.get((number, slot))
            if found is None:
                name = batch.names[slot]
                found = seen[(number, slot)] = len(kinds)
                kinds.append(_kind_prefix(value_kind(TYPE_NAMES.get(number, "unknown"), name)))
            index.append(found)
        return kinds, array("i", index).tobytes()


def batch_slot(batch: Batch, index: int) -> int:
    """The series-table slot of the request's series `index`."""
    return int.from_bytes(batch.series_slot[4 * index:4 * index + 4], "little", signed=True)


def hour_partition(tenant: str, hour: int) -> Partition:
    """The partition of an hour since the epoch."""
    start = datetime.fromtimestamp(hour * 3600, UTC)
    return Partition(tenant, f"{start.year:04d}-{start.month:02d}-{start.day:02d}", f"{start.hour:02d}")
