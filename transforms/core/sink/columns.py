"""A sink's samples as columns: routing per series, merge and time order, request plans, compiled bodies.

The request builder (transforms/core/sink/builder.py) decodes each message into a columnar batch
(transforms/core/wire/batch.py) and routes it here without a Python object per sample or per series of a
request:

- `SinkSeries` holds the sink's output series (label sets after its rules, empty values dropped): the
  1.0 label bytes, the labels and the shard of each, made once per label set. A slot of the decoder's
  series table maps to an output series (or to "dropped") through one numpy array, filled the first
  time the slot is seen, so rules run once per series, not per sample or per request. With a tenant label,
  a second array maps the slot to the tenant its label names (`tenants`), read in the same single pass.
- `ColumnShard` gathers one (tenant, shard)'s samples of a flush: output-series id, timestamp, value
  bits (uint64: NaN payloads and the stale marker are never touched as floats) and start timestamp.
  `requests()` orders them (series by first arrival, each series' samples by time, exact repeats
  once) with numpy sorts and cuts them into requests in C (`bodies.plan_requests`).
- `ColumnRequest` is one request: a range of those sorted columns, encoded by `bodies.encode_v1` or
  `bodies.encode_v2`; a refused one splits in halves by series, then by samples, like the Python path.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from transforms.core.metadata import MetadataLookup
from transforms.core.protocol import METRIC_NAME_LABEL, Protocol
from transforms.core.sink.relabel import Rule, apply_rules
from transforms.core.sink.tenants import split_tenant
from transforms.core.wire import bodies
from transforms.core.wire.convert import label_bytes
from transforms.core.wire.proto import remote_v1_pb2

Labels = tuple[tuple[str, str], ...]
DROPPED, UNSEEN = -1, -2
# `ordered`'s one-key sort: rank << TIME_BITS | timestamp - the earliest, when both fit in 63 bits.
TIME_BITS = 42
TIME_SPAN, RANK_LIMIT = 1 << TIME_BITS, 1 << (63 - TIME_BITS)
# A shard's columns between workers: (1.0 label bytes per series, uint32 series index, int64 timestamps,
# uint64 value bits, int64 start timestamps or None), all bytes: pickles without a Python object per sample.
ColumnChunk = tuple[list[bytes], bytes, bytes, bytes, bytes | None]


class SinkSeries:
    """One sink's output series, and the map from a decoder's series-table slots to them.

    Owned by the sink's RequestBuilder. Renewed wholesale (never while a flush holds ids) past `limit`.
    """

    def __init__(self, rules: tuple[Rule, ...], shards: int, limit: int = 200_000, tenant_label: str | None = None,
                 drop_tenant_label: bool = False) -> None:
        self.rules = rules
        self.shards = shards
        self.limit = limit
        self.tenant_label = tenant_label
        self.drop_tenant_label = drop_tenant_label
        self._renew()

    def _renew(self) -> None:
        self.index: dict[bytes, int] = {}
        self.keys: list[bytes] = []
        self.labels: list[Labels] = []
        self.names: list[str] = []
        self._shard_list: list[int] = []
        self.shard = np.zeros(0, np.int64)
        self.table_generation = -1
        self.slot_map = np.zeros(0, np.int64)
        # The tenant label's values seen (index 0: the label is absent), and each slot's index into them.
        self.tenants: list[str] = [""]
        self._tenant_index: dict[str, int] = {"": 0}
        self.slot_tenant = np.zeros(0, np.int64)
        self._given: dict[bytes, tuple[int, int]] = {}  # route_labels': input label bytes -> (output, tenant)

    def make_room(self) -> None:
        """Between flushes only: ids in a ColumnShard index these lists."""
        if len(self.keys) >= self.limit:
            self._renew()

    def route(self, slots: np.ndarray, table_labels: list[Labels], generation: int) -> np.ndarray:
        """Output-series id (or DROPPED) of each slot in `slots`; new slots go through the rules once."""
        if generation != self.table_generation:  # the decoder renewed its table: slots mean new label sets
            self.table_generation = generation
            self.slot_map = np.full(0, UNSEEN, np.int64)
            self.slot_tenant = np.zeros(0, np.int64)
        if len(self.slot_map) < len(table_labels):
            size = max(len(table_labels), 2 * len(self.slot_map))
            grown = np.full(size, UNSEEN, np.int64)
            grown[:len(self.slot_map)] = self.slot_map
            self.slot_map = grown
            tenants = np.zeros(size, np.int64)
            tenants[:len(self.slot_tenant)] = self.slot_tenant
            self.slot_tenant = tenants
        out = self.slot_map[slots]
        unseen = out == UNSEEN
        if unseen.any():
            before = len(self.keys)
            for slot in np.unique(slots[unseen]).tolist():
                self.slot_map[slot], self.slot_tenant[slot] = self._output_of(table_labels[slot])
            if len(self.keys) != before:
                self.shard = np.asarray(self._shard_list, np.int64)
            out = self.slot_map[slots]
        return out

    def route_labels(self, keys: list[bytes], labels: list[Labels]) -> tuple[np.ndarray, np.ndarray]:
        """Output-series id (or DROPPED) and tenant index of label sets given whole with their 1.0 label bytes
        (the restore's), not through a decoder's table; the rules run once per label set here too."""
        out = np.empty(len(keys), np.int64)
        tenants = np.zeros(len(keys), np.int64)
        before = len(self.keys)
        if len(self._given) > self.limit:  # label sets the rules drop add no output series: bound them too
            self._given.clear()
        given = self._given
        for i, key in enumerate(keys):
            found = given.get(key)
            if found is None:
                found = given[key] = self._output_of(labels[i])
            out[i], tenants[i] = found
        if len(self.keys) != before:
            self.shard = np.asarray(self._shard_list, np.int64)
        return out, tenants

    def _output_of(self, labels: Labels) -> tuple[int, int]:
        """The sink's rules, then labels with empty values dropped (as Prometheus' senders do), and the
        tenant the series' tenant label names (read after the rules, so rules may set or rename it)."""
        kept = apply_rules(self.rules, list(labels))
        if kept is None:
            return DROPPED, 0
        final = tuple((n, v) for n, v in kept if v)
        tenant = 0
        if self.tenant_label:
            final, value = split_tenant(final, self.tenant_label, self.drop_tenant_label)
            if value:
                tenant = self._tenant_index.setdefault(value, len(self.tenants))
                if tenant == len(self.tenants):
                    self.tenants.append(value)
        return self._register(label_bytes(final), final), tenant

    def ids_of(self, keys: list[bytes]) -> np.ndarray:
        """Ids of output series another worker already routed (their 1.0 label bytes): no rules again."""
        ids = np.empty(len(keys), np.int64)
        before = len(self.keys)
        for i, key in enumerate(keys):
            found = self.index.get(key)
            if found is None:
                labels = remote_v1_pb2.TimeSeries.FromString(key).labels
                found = self._register(key, tuple((lab.name, lab.value) for lab in labels))
            ids[i] = found
        if len(self.keys) != before:
            self.shard = np.asarray(self._shard_list, np.int64)
        return ids

    def _register(self, key: bytes, final: Labels) -> int:
        found = self.index.get(key)
        if found is None:
            found = self.index[key] = len(self.keys)
            self.keys.append(key)
            self.labels.append(final)
            self.names.append(next((v for n, v in final if n == METRIC_NAME_LABEL), ""))
            self._shard_list.append(zlib.crc32(key) % self.shards)
        return found


@dataclasses.dataclass
class Columns:
    """Samples of one shard: output-series id, timestamp, value bits, start timestamp (or None)."""

    series: np.ndarray  # uint32
    timestamps: np.ndarray  # int64
    bits: np.ndarray  # uint64
    starts: np.ndarray | None  # int64, 0 = none

    def __len__(self) -> int:
        return len(self.series)

    def take(self, index: np.ndarray) -> Columns:
        return Columns(self.series[index], self.timestamps[index], self.bits[index],
                       None if self.starts is None else self.starts[index])


def _in_series_order(series: np.ndarray, timestamps: np.ndarray) -> bool:
    """Each series' samples one contiguous run, in strictly increasing time: already what `ordered` makes (rows
    of an archive file, sorted by series then time), checked in O(n) instead of sorted again."""
    same = series[1:] == series[:-1]
    if not (timestamps[1:][same] > timestamps[:-1][same]).all():
        return False
    heads = series[np.concatenate(([0], np.flatnonzero(~same) + 1))]
    return int(np.bincount(heads).max()) == 1


def present_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct ids, ascending; each sample's position among them): np.unique(ids, return_inverse=True)
    by counting, O(n + largest id), for ids that index a table (series, shards) rather than a sort or a hash."""
    seen = np.bincount(ids) > 0
    position = np.cumsum(seen) - 1
    return np.flatnonzero(seen), position[ids]


def _first_arrival_rank(series: np.ndarray) -> np.ndarray:
    """Per sample, its series' rank by first arrival (0 for the series that came first), without a sort of n."""
    n = len(series)
    first = np.full(int(series.max()) + 1, n, np.int64)
    np.minimum.at(first, series, np.arange(n))
    ids = np.flatnonzero(first < n)
    rank_of = np.empty(len(first), np.int64)
    rank_of[ids[np.argsort(first[ids], kind="stable")]] = np.arange(len(ids))
    return rank_of[series]


def _by_rank_and_time(rank: np.ndarray, timestamps: np.ndarray) -> np.ndarray | None:
    """The order by (rank, timestamp, arrival) as one stable sort of a packed int64 key, when no two samples
    share a series and timestamp (else None: ties need the value and the repeat rule) and the key fits."""
    low, high = int(timestamps.min()), int(timestamps.max())
    if high - low >= TIME_SPAN or int(rank.max()) >= RANK_LIMIT:
        return None
    key = (rank << TIME_BITS) | (timestamps - low)
    order = np.argsort(key, kind="stable")
    packed = key[order]
    return None if (packed[1:] == packed[:-1]).any() else order


def concat(parts: list[Columns]) -> Columns:
    if len(parts) == 1:
        return parts[0]
    starts = None
    if any(p.starts is not None for p in parts):
        starts = np.concatenate([p.starts if p.starts is not None else np.zeros(len(p), np.int64) for p in parts])
    return Columns(np.concatenate([p.series for p in parts]), np.concatenate([p.timestamps for p in parts]),
                   np.concatenate([p.bits for p in parts]), starts)


class ColumnShard:
    """One (tenant, shard)'s float samples in a flush, as column pieces in arrival order."""

    def __init__(self, series: SinkSeries) -> None:
        self.sink_series = series
        self.parts: list[Columns] = []

    def add(self, part: Columns) -> None:
        if len(part):
            self.parts.append(part)

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def export(self) -> ColumnChunk | None:
        """This shard's samples for another worker (Beam): label bytes per series, columns as bytes."""
        cols = concat(self.parts)
        if not len(cols):
            return None
        used, local = present_ids(cols.series)
        keys = [self.sink_series.keys[i] for i in used.tolist()]
        return (keys, local.astype(np.uint32).tobytes(), cols.timestamps.tobytes(), cols.bits.tobytes(),
                None if cols.starts is None else cols.starts.tobytes())

    def add_chunk(self, chunk: ColumnChunk) -> None:
        keys, local, timestamps, bits, starts = chunk
        ids = self.sink_series.ids_of(keys)
        self.add(Columns(ids[np.frombuffer(local, np.uint32)].astype(np.uint32), np.frombuffer(timestamps, np.int64),
                         np.frombuffer(bits, np.uint64), None if starts is None else np.frombuffer(starts, np.int64)))

    def to_series(self) -> Iterator[tuple[bytes, remote_v1_pb2.TimeSeries]]:
        """The pieces as protobuf series, in arrival order (start timestamps as Sample's unknown field 3)."""
        cols = concat(self.parts)
        if not len(cols):
            return
        keys = self.sink_series.keys
        body = bodies.encode_v1(keys, cols.series, cols.timestamps, cols.bits, 0, len(cols), starts=cols.starts)
        runs = np.concatenate(([0], np.flatnonzero(np.diff(cols.series.astype(np.int64))) + 1))
        pieces = remote_v1_pb2.WriteRequest.FromString(body).timeseries
        for s, piece in zip(cols.series[runs].tolist(), pieces, strict=True):
            yield keys[s], piece

    def ordered(self) -> Columns:
        """Series by first arrival, each one's samples by time (arrival order on ties), exact repeats once."""
        cols = concat(self.parts)
        n = len(cols)
        if n == 0 or _in_series_order(cols.series, cols.timestamps):
            return cols
        rank = _first_arrival_rank(cols.series)
        order = _by_rank_and_time(rank, cols.timestamps)
        if order is not None:
            return cols.take(order)
        arrival = np.arange(n)
        order = np.lexsort((arrival, cols.bits, cols.timestamps, rank))
        r, t, b = rank[order], cols.timestamps[order], cols.bits[order]
        repeat = np.zeros(n, bool)
        repeat[1:] = (r[1:] == r[:-1]) & (t[1:] == t[:-1]) & (b[1:] == b[:-1])
        kept = order[~repeat]  # the earliest arrival of each (series, timestamp, value bits)
        kept = kept[np.lexsort((kept, cols.timestamps[kept], rank[kept]))]
        return cols.take(kept)

    def requests(self, max_points: int, max_bytes: int) -> Iterator[ColumnRequest]:
        cols = self.ordered()
        if not len(cols):
            return
        cuts = bodies.plan_requests(self.sink_series.keys, cols.series, cols.timestamps, cols.bits, cols.starts,
                                    max_points, max_bytes)
        bounds = [0, *cuts, len(cols)]
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            yield ColumnRequest(self.sink_series, cols, lo, hi)


@dataclasses.dataclass
class ColumnRequest:
    """Samples [lo, hi) of a shard's ordered columns: one request's worth."""

    sink_series: SinkSeries
    cols: Columns
    lo: int
    hi: int

    @property
    def points(self) -> int:
        return self.hi - self.lo

    def sent_counts(self) -> tuple[int, int, int]:
        return self.points, 0, 0

    def encode(self, protocol: Protocol, lookup: MetadataLookup) -> bytes:
        """The uncompressed body: 1.0 (start timestamps dropped) or 2.0 with each series' family metadata."""
        c = self.cols
        if protocol is Protocol.V1:
            return bodies.encode_v1(self.sink_series.keys, c.series, c.timestamps, c.bits, self.lo, self.hi)
        names = self.sink_series.names
        metadata: dict[int, Any] = {}
        for s in np.unique(c.series[self.lo:self.hi]).tolist():  # per series of the request: its family's metadata
            metadata[s] = lookup(names[s])
        return bodies.encode_v2(self.sink_series.labels, metadata, c.series, c.timestamps, c.bits, c.starts,
                                self.lo, self.hi)

    def halves(self) -> tuple[ColumnRequest, ColumnRequest] | None:
        """By series first (the first half holds n // 2 of them), then by samples."""
        runs = np.flatnonzero(np.diff(self.cols.series[self.lo:self.hi].astype(np.int64))) + 1 + self.lo
        if len(runs):
            middle = int(runs[(len(runs) + 1) // 2 - 1])
        elif self.points > 1:
            middle = self.lo + self.points // 2
        else:
            return None
        return (ColumnRequest(self.sink_series, self.cols, self.lo, middle),
                ColumnRequest(self.sink_series, self.cols, middle, self.hi))
