"""The request builder of one sink: messages or columns -> (tenant, shard) batches -> request bodies.

Pure: no threads, no sleeping, no clock but the one it is given (for dead-letter records). What it does:

- decodes each message into columns (transforms/core/wire/batch.py) and routes them onto ShardBatches:
  the sink's rules run once per label set (`SinkSeries`), a tenant label picks each series' tenant;
  series carrying histograms or exemplars take the protobuf path, alone (`shard_side_series`), and a
  request the compiled decoder refuses goes whole through it (`shard_parsed`);
- remembers each tenant's family metadata, which a 2.0 body attaches to its series (`lookup`);
- plans a batch's requests and encodes their bodies in the protocol the driver currently speaks;
- builds dead-letter records (the archive's schema) for what is refused, here or by the sink.

Sending, retrying, the 2.0 -> 1.0 fallback and the threads are the driver's (transforms/io/sink_driver.py).
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import numpy as np

from transforms.core.deadletter import DeadLetter
from transforms.core.errors import InvalidPayload
from transforms.core.metadata import FamilyMetadata, MetadataLookup, family_candidates
from transforms.core.protocol import DEFAULT_TENANT, MAX_DECOMPRESSED, Protocol, is_valid_tenant
from transforms.core.sink.batching import (
    SeriesRequest,
    ShardBatch,
    TimeSeries,
    points,
    shard_of,
    tenant_metadata_everywhere,
)
from transforms.core.sink.columns import ColumnRequest, Columns, ColumnShard, Labels, SinkSeries
from transforms.core.sink.config import SinkConfig
from transforms.core.sink.relabel import apply_rules
from transforms.core.sink.request import headers_for, metadata_payload
from transforms.core.sink.stats import SinkStats
from transforms.core.sink.tenants import bad_tenant_reason, split_tenant
from transforms.core.wire import codec, snappy_block
from transforms.core.wire.batch import Batch, SeriesTable, decode
from transforms.core.wire.convert import label_bytes, label_keys, series_key, v2_series_to_v1, v2_to_v1
from transforms.core.wire.proto import remote_v1_pb2

log = logging.getLogger(__name__)
RELABEL_CACHE_LIMIT = 200_000

ShardKey = tuple[str, int]  # (tenant, shard)
Request = ColumnRequest | SeriesRequest  # one request's worth: compiled from columns, or protobuf series
Batches = dict[ShardKey, ShardBatch]
Metadata = list[remote_v1_pb2.MetricMetadata]


def v2_metadata(batch: Batch) -> Metadata:
    """A 2.0 batch's per-series metadata as 1.0 family entries (the last of a family wins), as v2_to_v1 gives
    them: only the metadata fields are read from the message, the family name is the series table's."""
    message = batch.message
    symbols = message.symbols
    slots = np.frombuffer(batch.series_slot, np.int32).tolist()
    names = batch.names
    found: dict[str, tuple[int, int, int]] = {}
    for slot, series in zip(slots, message.timeseries, strict=True):
        if series.HasField("metadata"):
            m = series.metadata
            found[names[slot]] = (m.type, m.help_ref, m.unit_ref)
    return [remote_v1_pb2.MetricMetadata(type=kind, metric_family_name=name, help=symbols[help_ref],
                                         unit=symbols[unit_ref]) for name, (kind, help_ref, unit_ref) in found.items()]


class RequestBuilder:
    def __init__(self, sink: SinkConfig, *, clock: Callable[[], datetime], stats: SinkStats | None = None) -> None:
        """`clock`: the wall clock of dead-letter records' publish_time (the caller's, so tests can fix it)."""
        self.sink = sink
        self.clock = clock
        self.stats = stats or SinkStats()
        self.families: dict[str, dict[str, FamilyMetadata]] = {}  # tenant -> family -> metadata (for 2.0)
        self._relabelled: dict[bytes, tuple[bytes, list[tuple[str, str]]] | None | bool] = {}
        # The columnar path: decoded label sets (validated once each), and this sink's output series.
        self.table = SeriesTable(limit=RELABEL_CACHE_LIMIT)
        self.series = SinkSeries(sink.rules, sink.queue.shards, limit=RELABEL_CACHE_LIMIT,
                                 tenant_label=sink.tenant_label, drop_tenant_label=sink.tenant_label_drop)

    # -- messages -> shards ------------------------------------------------------------------
    def shard_messages(self, messages: Iterable[tuple[bytes, dict[str, str]]]) -> tuple[Batches, list[str]]:
        """Decode and shard; undecodable messages come back as dead-letter records."""
        self.series.make_room()  # only here: the batches returned hold ids of this sink's output series
        batches: Batches = {}
        dead: list[str] = []
        for data, attributes in messages:
            try:
                dead += self.shard_message(data, attributes, batches)
            except Exception as exc:  # one poison message must not block the sink: dead-letter it whole
                dead.append(self.record(attributes, data, f"undecodable for sink {self.sink.name}: {exc}"))
        if self.sink.tenant_label:
            tenant_metadata_everywhere(batches)
        return batches, dead

    def shard_message(self, data: bytes, attributes: dict[str, str], batches: Batches) -> list[str]:
        """One message onto its shards; returns dead-letter records for series refused here (bad tenant label)."""
        protocol = Protocol(attributes.get("protocol", ""))
        tenant = attributes.get("tenant") or DEFAULT_TENANT
        payload = snappy_block.decompress(data, MAX_DECOMPRESSED)
        try:
            batch = decode(payload, protocol, self.table)
        except InvalidPayload:  # the receiver's rules are not ours to enforce here: forward it as it came
            batch = None
        if batch is None:
            return self.shard_parsed(payload, codec.parse(payload, protocol), protocol, tenant, batches)
        dead = self.shard_columns(batch, tenant, batches)
        if batch.slow:  # only the series carrying histograms or exemplars take the protobuf path
            dead += self.shard_side_series(batch, tenant, batches)
        if batch.counts.metadata:  # 1.0: rare (Prometheus sends it in requests of their own); 2.0: per series
            message = batch.message
            metadata = list(message.metadata) if protocol is Protocol.V1 else v2_metadata(batch)
            self.add_metadata(self.fallback_tenant(tenant), metadata, batches)
        return dead

    def fallback_tenant(self, tenant: str) -> str:
        """With a tenant label, where series without it go: the sink's fixed tenant, else the message's."""
        return (self.sink.tenant or tenant) if self.sink.tenant_label else tenant

    def _family_key(self, tenant: str) -> str:
        """Whose metadata a series may use: its tenant's, or with a tenant label any (it came with the message)."""
        return "" if self.sink.tenant_label else tenant

    def _bad_tenant(self, value: str, incoming: str, points: int, body_v1: bytes) -> str:
        """A dead-letter record for series whose tenant label names an invalid tenant: never sent elsewhere."""
        self.stats.add(samples_dead_lettered=points)
        reason = bad_tenant_reason(self.sink.name, typing.cast(str, self.sink.tenant_label), value)
        log.error("%s; %d samples dead-lettered", reason, points)
        return self.record({"protocol": Protocol.V1.value, "tenant": incoming, "samples": str(points)},
                           snappy_block.compress(body_v1), reason)

    def shard_columns(self, batch: Batch, tenant: str, batches: Batches) -> list[str]:
        """A batch's float samples onto its shards' columns (but those of its slow series, which go whole
        through the protobuf path); the sink's rules run once per label set.

        With a tenant label, each sample goes under its series' tenant; returns dead-letter records for
        series whose label names an invalid tenant.
        """
        slots = np.frombuffer(batch.series_slot, np.int32)
        route = self.series.route(slots, batch.labels, self.table.generation)
        sample_series = np.frombuffer(batch.sample_series, np.uint32)
        timestamps, values = np.frombuffer(batch.timestamps, np.int64), np.frombuffer(batch.values, np.uint64)
        starts = None if batch.starts is None else np.frombuffer(batch.starts, np.int64)
        if batch.slow:
            fast = ~np.isin(sample_series, np.asarray(batch.slow, np.uint32))
            sample_series, timestamps, values = sample_series[fast], timestamps[fast], values[fast]
            starts = None if starts is None else starts[fast]
        if starts is not None and batch.created is not None:
            # before rc.4: the series' created timestamp starts each sample without one
            starts = np.where(starts == 0, np.frombuffer(batch.created, np.int64)[sample_series], starts)
        series_tenant = self.series.slot_tenant[slots] if self.sink.tenant_label else None
        return self.route_columns(route, series_tenant, Columns(sample_series, timestamps, values, starts), tenant,
                                  batches)

    def route_columns(self, route: np.ndarray, series_tenant: np.ndarray | None, samples: Columns, tenant: str,
                      batches: Batches) -> list[str]:
        """Float samples onto their shards' columns. `samples.series` indexes the input series, `route` maps
        those to this sink's output series (or DROPPED), `series_tenant` to their index in `series.tenants`
        (with a tenant label); `samples.starts` holds 0 where a sample has no start timestamp."""
        out = route[samples.series]
        sample_tenant = None if series_tenant is None else series_tenant[samples.series]
        cols = Columns(out.astype(np.uint32), samples.timestamps, samples.bits, None)
        starts = samples.starts
        if starts is not None:
            cols.starts = starts if starts.any() else None
        dropped = out < 0
        if dropped.any():
            self.stats.add(samples_dropped_by_rules=int(dropped.sum()))
            cols = cols.take(~dropped)
            sample_tenant = None if sample_tenant is None else sample_tenant[~dropped]
        if sample_tenant is None:
            self._columns_onto_shards(tenant, cols, batches)
            return []
        dead = []
        for index in np.unique(sample_tenant).tolist():
            part = cols.take(sample_tenant == index)
            value = self.series.tenants[index]
            if index and not is_valid_tenant(value):
                shard = ColumnShard(self.series)
                shard.add(part)
                ordered = shard.ordered()
                body = ColumnRequest(self.series, ordered, 0, len(ordered)).encode(Protocol.V1, self.lookup(tenant))
                dead.append(self._bad_tenant(value, tenant, len(part), body))
            else:
                self._columns_onto_shards(value or self.fallback_tenant(tenant), part, batches)
        return dead

    def _columns_onto_shards(self, tenant: str, cols: Columns, batches: Batches) -> None:
        shard_of_sample = self.series.shard[cols.series]
        for shard in np.flatnonzero(np.bincount(shard_of_sample)).tolist():
            key = (tenant, shard)
            target = batches.get(key)
            if target is None:
                target = batches[key] = ShardBatch()
            if target.columns is None:
                target.columns = ColumnShard(self.series)
            target.columns.add(cols.take(shard_of_sample == shard))

    def shard_selected(self, tenant: str, keys: list[bytes], labels: list[Labels], samples: Columns,
                       slow: Iterable[tuple[int, TimeSeries]], metadata: Metadata) -> tuple[Batches, list[str]]:
        """Series and samples selected elsewhere (the restore's, transforms/core/restore/selection.py) onto their
        shards, with no request bytes in between: `keys` and `labels` are each input series' 1.0 label bytes
        and sorted labels, `samples.series` indexes them (values as uint64 float bits, starts 0 for none),
        `slow` holds the series carrying histograms or exemplars whole (by index), `metadata` their families'.
        Returns the batches, and dead-letter records for series whose tenant label names an invalid tenant."""
        self.series.make_room()  # only here: the batches returned hold ids of this sink's output series
        batches: Batches = {}
        route, series_tenant = self.series.route_labels(keys, labels)
        dead = self.route_columns(route, series_tenant if self.sink.tenant_label else None, samples, tenant, batches)
        dead += self.shard_series(((keys[index], series) for index, series in slow), tenant, batches)
        self.add_metadata(self.fallback_tenant(tenant), metadata, batches)
        if self.sink.tenant_label:
            tenant_metadata_everywhere(batches)
        return batches, dead

    def add_metadata(self, tenant: str, metadata: Metadata, batches: Batches) -> None:
        """Family metadata entries: remembered for the tenant, and sent from its shard 0."""
        known = self.families.setdefault(self._family_key(tenant), {})
        for entry in metadata:
            known[entry.metric_family_name] = (entry.type, entry.help, entry.unit)
            batches.setdefault((tenant, 0), ShardBatch()).add_metadata(entry)

    def shard_side_series(self, batch: Batch, tenant: str, batches: Batches) -> list[str]:
        """The protobuf path for a batch's slow series only, each parsed from its own bytes (the decoder's side
        data); their key is the label bytes of their table labels, as the columns' output series have."""
        slots = np.frombuffer(batch.series_slot, np.int32)
        if batch.protocol is Protocol.V1:
            pairs: Iterable[tuple[bytes, TimeSeries]] = (
                (label_bytes(batch.labels[slots[index]]), series) for index, series in batch.side_series())
        else:
            symbols = batch.symbols
            pairs = ((label_bytes(batch.labels[slots[index]]), v2_series_to_v1(series, symbols)[0])  # type: ignore[arg-type]
                     for index, series in batch.side_series())
        return self.shard_series(pairs, tenant, batches)

    def shard_parsed(self, payload: bytes, message: Any, protocol: Protocol, tenant: str,
                     batches: Batches) -> list[str]:
        """The Python path, for a request the compiled decoder refused (the receiver's rules are not ours):
        `message` is `payload` parsed by upb (codec.parse)."""
        if protocol is Protocol.V1:
            pairs = zip(label_keys(payload), message.timeseries, strict=True)
            metadata = list(message.metadata)
        else:
            series, metadata = v2_to_v1(message)
            pairs = ((series_key(s), s) for s in series)
        dead = self.shard_series(pairs, tenant, batches)
        self.add_metadata(self.fallback_tenant(tenant), metadata, batches)
        return dead

    def shard_series(self, pairs: Iterable[tuple[bytes, TimeSeries]], tenant: str, batches: Batches) -> list[str]:
        """Protobuf series (keyed by their label bytes) onto their shards: the sink's rules, the tenant label."""
        shards = self.sink.queue.shards
        refused: dict[str, list[TimeSeries]] = {}  # invalid tenant label value -> its series
        for key, series in pairs:
            kept = self._relabel(key, series)
            if kept is None:
                self.stats.add(samples_dropped_by_rules=points(series))
                continue
            key, series = kept
            route = tenant
            if self.sink.tenant_label:
                key, series, value = self._split_tenant(key, series)
                if value and not is_valid_tenant(value):
                    refused.setdefault(value, []).append(series)
                    continue
                route = value or self.fallback_tenant(tenant)
            shard = (route, shard_of(key, shards))
            batch = batches.get(shard)
            if batch is None:
                batch = batches[shard] = ShardBatch()
            batch.add(key, series)
        return [self._bad_tenant(value, tenant, sum(points(s) for s in refused_series),
                                 SeriesRequest(refused_series).encode(Protocol.V1, self.lookup(tenant)))
                for value, refused_series in refused.items()]

    def _split_tenant(self, key: bytes, series: TimeSeries) -> tuple[bytes, TimeSeries, str]:
        """The series' tenant label value, and the series without that label if the sink drops it."""
        labels = tuple((lab.name, lab.value) for lab in series.labels)
        kept, value = split_tenant(labels, typing.cast(str, self.sink.tenant_label), self.sink.tenant_label_drop)
        if kept == labels:
            return key, series, value
        out = _with_labels(series, kept)
        return series_key(out), out, value

    def _relabel(self, key: bytes, series: TimeSeries) -> tuple[bytes, TimeSeries] | None:
        """The sink's rules, then labels with empty values dropped; cached per label set.

        In Prometheus an empty label value is the same as an absent label, and senders drop them
        (the compliance suite's EmptyLabels case); rules that empty a value drop it the same way.
        """
        if key not in self._relabelled:
            if len(self._relabelled) > RELABEL_CACHE_LIMIT:
                self._relabelled.clear()
            original = [(lab.name, lab.value) for lab in series.labels]
            labels = apply_rules(self.sink.rules, original)
            if labels is None:
                self._relabelled[key] = None
            else:
                labels = [(n, v) for n, v in labels if v]
                if labels == original:
                    self._relabelled[key] = True  # unchanged: the common case, kept small
                else:
                    self._relabelled[key] = (label_bytes(labels), labels)
        found = self._relabelled[key]
        if found is None:
            return None
        if found is True:
            return key, series
        new_key, labels = found  # type: ignore[misc]
        return new_key, _with_labels(series, labels)

    # -- shards -> requests ------------------------------------------------------------------
    def learn_metadata(self, tenant: str, metadata: Iterable[remote_v1_pb2.MetricMetadata]) -> None:
        """Metadata a shard's batch brought (the streaming graph hands each shard its tenant's)."""
        known = self.families.setdefault(self._family_key(tenant), {})
        known.update({m.metric_family_name: (m.type, m.help, m.unit) for m in metadata})

    def plan(self, batch: ShardBatch) -> Iterator[Request]:
        """A shard's requests, in the order they must be sent."""
        return batch.plan(self.sink.queue.max_samples_per_request, self.sink.queue.max_bytes_per_request)

    def lookup(self, tenant: str) -> MetadataLookup:
        """The family metadata a 2.0 body attaches to a series of `tenant`, by metric name."""
        known = self.families.get(self._family_key(tenant), {})

        def lookup(name: str) -> FamilyMetadata | None:
            return next((known[f] for f in family_candidates(name) if f in known), None)
        return lookup

    def body(self, tenant: str, request: Request, protocol: Protocol, metadata: Metadata | None = None) -> bytes:
        """The snappy-compressed body of a request (1.0 metadata entries appended: they merge into it)."""
        payload = request.encode(protocol, self.lookup(tenant))
        if protocol is Protocol.V1 and metadata:
            payload += metadata_payload(metadata)
        return snappy_block.compress(payload)

    def headers(self, tenant: str, protocol: Protocol) -> dict[str, str]:
        """The spec's headers for a request of `tenant`'s shard in `protocol` (auth is the service's)."""
        return headers_for(self.sink, tenant, protocol)

    def dead_letter(self, tenant: str, request: Request, metadata: Metadata, error: str, status: int | None,
                    answer: str | None) -> str:
        """The record of a request the sink refused for good: its content as 1.0, whatever it was sent as."""
        body_v1 = snappy_block.compress(request.encode(Protocol.V1, self.lookup(tenant)) + metadata_payload(metadata))
        return self.record({"protocol": Protocol.V1.value, "tenant": tenant, "samples": str(request.points)},
                           body_v1, error, status=status, answer=answer)

    def record(self, attributes: dict[str, str], data: bytes, error: str, status: int | None = None,
               answer: str | None = None) -> str:
        """The archive's dead-letter schema plus where it was refused (`python -m pipeline.replay` republishes it)."""
        return DeadLetter(error=error, data=data, attributes=dict(attributes), message_id=None,
                          publish_time=self.clock().isoformat(), sink=self.sink.name, url=self.sink.url,
                          status=status, answer=answer).to_json()


def _with_labels(series: TimeSeries, labels: Iterable[tuple[str, str]]) -> TimeSeries:
    out = TimeSeries(labels=[remote_v1_pb2.Label(name=n, value=v) for n, v in labels])
    out.samples.extend(series.samples)
    out.histograms.extend(series.histograms)
    out.exemplars.extend(series.exemplars)
    return out
