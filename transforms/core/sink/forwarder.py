"""Forwarding to one sink: messages -> shards -> ordered requests -> retried POSTs -> dead letters.

Used as is by the local runner's forward loop, and by the Beam DoFns of the streaming graph
(transforms/beam/sinks.py). Everything the sink refuses for good (a final 4xx) comes back as
dead-letter records, after the request was split down to what the sink actually refused.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import typing
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np

from transforms.core.buckets import REQUEST_BUCKETS, Buckets
from transforms.core.deadletter import DeadLetter
from transforms.core.errors import InvalidPayload
from transforms.core.metadata import family_candidates
from transforms.core.protocol import DEFAULT_TENANT, MAX_DECOMPRESSED, Protocol, is_valid_tenant, ref_pairs
from transforms.core.retry import Action, Attempt, Jitter, RetryPolicy
from transforms.core.sink.batching import (
    SeriesRequest,
    ShardBatch,
    TimeSeries,
    points,
    shard_of,
    tenant_metadata_everywhere,
)
from transforms.core.sink.columns import ColumnRequest, Columns, ColumnShard, SinkSeries
from transforms.core.sink.config import SinkConfig
from transforms.core.sink.delivered import DeliveredLog, refused_for_order
from transforms.core.sink.order import OrderGuard
from transforms.core.sink.relabel import apply_rules
from transforms.core.sink.request import FamilyMetadata, headers_for, metadata_payload, samples_only
from transforms.core.sink.tenants import bad_tenant_reason, split_tenant
from transforms.core.wire import codec, snappy_block
from transforms.core.wire.batch import Batch, SeriesTable, decode
from transforms.core.wire.convert import label_bytes
from transforms.core.wire.proto import remote_v1_pb2, remote_v1_view_pb2, remote_v2_pb2

log = logging.getLogger(__name__)
# Final answers where splitting can isolate the refused series (out-of-order, duplicate, too large).
# Others (401, 403, 404 ...) refuse the request, not its content: splitting would only multiply them.
SPLITTABLE_STATUSES = frozenset({400, 409, 413, 422})
RELABEL_CACHE_LIMIT = 200_000
LATENCY_WINDOW = 10_000
WARN_EVERY = 60.0  # seconds between log lines about the same failing sink's retries

ShardKey = tuple[str, int]  # (tenant, shard)
Request = ColumnRequest | SeriesRequest  # one request's worth: compiled from columns, or protobuf series


class Stopped(Exception):
    """The process is stopping while a sink is still failing: nothing is acked, Pub/Sub redelivers."""


class SinkStats:
    """Per-sink counters and recent request latencies; thread-safe."""

    FIELDS = ("requests", "samples_sent", "samples_failed", "samples_retried", "samples_dead_lettered",
              "requests_dead_lettered", "metadata_dead_lettered", "samples_dropped_by_rules", "metadata_sent",
              "samples_not_written", "protocol_fallbacks", "samples_already_delivered")

    def __init__(self) -> None:
        self.counts = dict.fromkeys(self.FIELDS, 0)
        self.latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self.latency_buckets = Buckets(REQUEST_BUCKETS)  # every request since start, for /metrics
        self.lock = threading.Lock()

    def add(self, **increments: int) -> None:
        with self.lock:
            for name, value in increments.items():
                self.counts[name] += value

    def request(self, seconds: float) -> None:
        with self.lock:
            self.counts["requests"] += 1
            self.latencies.append(seconds)
        self.latency_buckets.observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            ordered = sorted(self.latencies)
            counts = dict(self.counts)
        if ordered:
            counts["latency_p50_ms"] = round(1000 * ordered[len(ordered) // 2], 2)
            counts["latency_p99_ms"] = round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2)
        return counts


def label_keys(payload: bytes) -> list[bytes]:
    """One exact label-set key per series of a 1.0 payload, computed in C."""
    view = remote_v1_view_pb2.WriteRequestLabels.FromString(payload)
    view.DiscardUnknownFields()
    return [s.SerializeToString() for s in view.timeseries]


def series_key(series: TimeSeries) -> bytes:
    """The same key for a series built in Python (labels only serialize like SeriesLabels)."""
    return TimeSeries(labels=series.labels).SerializeToString()


def v2_to_v1(request: remote_v2_pb2.Request) -> tuple[list[TimeSeries], list[remote_v1_pb2.MetricMetadata]]:
    """2.0 series in our internal 1.0 shape, and their metadata as 1.0 family entries.

    Start timestamps ride along as unknown fields (request.samples_only explains how), so a 2.0 sink
    gets them back. The older per-series `created_timestamp` (2.0 before rc.4) becomes the start
    timestamp of each sample and histogram that has none: rc.4 receivers no longer read field 6.
    """
    series_out, metadata = [], {}
    for s in request.timeseries:
        out, entry = v2_series_to_v1(s, request.symbols)
        if entry is not None:
            metadata[entry.metric_family_name] = entry
        series_out.append(out)
    return series_out, list(metadata.values())


def v2_metadata(batch: Batch) -> list[remote_v1_pb2.MetricMetadata]:
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


def v2_series_to_v1(s: remote_v2_pb2.TimeSeries, symbols: Sequence[str]
                    ) -> tuple[TimeSeries, remote_v1_pb2.MetricMetadata | None]:
    """One 2.0 series (see v2_to_v1) and its metadata entry, if it has one."""
    out = TimeSeries()
    out.labels.extend(remote_v1_pb2.Label(name=n, value=v) for n, v in ref_pairs(s.labels_refs, symbols))
    if s.created_timestamp:
        for point in (*s.samples, *s.histograms):
            point.start_timestamp = point.start_timestamp or s.created_timestamp
    if s.samples:
        out.MergeFromString(samples_only(s.samples, remote_v2_pb2.TimeSeries()))
    out.histograms.extend(remote_v1_pb2.Histogram.FromString(h.SerializeToString()) for h in s.histograms)
    for ex in s.exemplars:
        e = out.exemplars.add(timestamp=ex.timestamp, value=ex.value)
        e.labels.extend(remote_v1_pb2.Label(name=n, value=v) for n, v in ref_pairs(ex.labels_refs, symbols))
    entry = None
    if s.HasField("metadata"):
        name = next((lab.value for lab in out.labels if lab.name == "__name__"), "")
        entry = remote_v1_pb2.MetricMetadata(type=s.metadata.type, metric_family_name=name,
                                             help=symbols[s.metadata.help_ref], unit=symbols[s.metadata.unit_ref])
    return out, entry


class SinkService(typing.Protocol):
    """What the forwarder needs from a transport (transforms/io/http_sink.HttpService in production)."""

    def post(self, body: bytes, headers: dict[str, str], points: int) -> Attempt:
        """One attempt. `points`: the samples and histograms the body carries, for layers that meter them
        (transforms/io/rate_limit.py)."""


class Forwarder:
    def __init__(self, sink: SinkConfig, *, service: SinkService, stats: SinkStats | None = None,
                 stopping: threading.Event | None = None, policy: RetryPolicy | None = None,
                 delivered: DeliveredLog | None = None) -> None:
        self.sink = sink
        self.stats = stats or SinkStats()
        # `order: strict`: what the sink accepted per series, to tell a redelivery from a real loss
        # (transforms/core/sink/order.py). With `any`, nothing, until the sink refuses a sample for its order.
        self.order: OrderGuard | None = None
        if sink.order == "strict" or delivered is not None:
            self.order = OrderGuard(sink.name, self.stats, delivered if delivered is not None else DeliveredLog())
        self.stopping = stopping or threading.Event()
        self.service = service
        self.policy = policy or RetryPolicy(initial_delay=sink.queue.min_backoff, max_delay=sink.queue.max_backoff,
                                            jitter=Jitter.EQUAL, max_elapsed=sink.queue.max_retry_duration)
        self.families: dict[str, dict[str, FamilyMetadata]] = {}  # tenant -> family -> metadata (for 2.0)
        # What this sink is spoken to in: a 2.0 sink that answers like a 1.x receiver gets 1.0 from then on.
        self.protocol = sink.protocol
        self._fallback_lock = threading.Lock()
        self._relabelled: dict[bytes, tuple[bytes, list[tuple[str, str]]] | None | bool] = {}
        # The columnar path: decoded label sets (validated once each), and this sink's output series.
        self.table = SeriesTable(limit=RELABEL_CACHE_LIMIT)
        self.series = SinkSeries(sink.rules, sink.queue.shards, limit=RELABEL_CACHE_LIMIT,
                                 tenant_label=sink.tenant_label, drop_tenant_label=sink.tenant_label_drop)
        self._executor: ThreadPoolExecutor | None = None
        # When this sink's current run of failures began (None while it answers): max_retry_duration bounds the
        # outage, not each request, so a bounded job gives up on a dead sink once, not once per request.
        self._failing_since: float | None = None
        self._last_warned: float | None = None

    # -- messages -> shards ------------------------------------------------------------------
    def shard_messages(self, messages: Iterable[tuple[bytes, dict[str, str]]]
                       ) -> tuple[dict[ShardKey, ShardBatch], list[str]]:
        """Decode and shard; undecodable messages come back as dead-letter records."""
        self.series.make_room()  # only here: the batches returned hold ids of this sink's output series
        batches: dict[ShardKey, ShardBatch] = {}
        dead: list[str] = []
        for data, attributes in messages:
            try:
                dead += self._shard_one(data, attributes, batches)
            except Exception as exc:  # one poison message must not block the sink: dead-letter it whole
                dead.append(self._record(attributes, data, f"undecodable for sink {self.sink.name}: {exc}"))
        if self.sink.tenant_label:
            tenant_metadata_everywhere(batches)
        return batches, dead

    def _shard_one(self, data: bytes, attributes: dict[str, str], batches: dict[ShardKey, ShardBatch]) -> list[str]:
        """One message onto its shards; returns dead-letter records for series refused here (bad tenant label)."""
        protocol = Protocol(attributes.get("protocol", ""))
        tenant = attributes.get("tenant") or DEFAULT_TENANT
        payload = snappy_block.decompress(data, MAX_DECOMPRESSED)
        try:
            batch = decode(payload, protocol, self.table)
        except InvalidPayload:  # the receiver's rules are not ours to enforce here: forward it as it came
            batch = None
        if batch is None:
            return self._shard_message(payload, codec.parse(payload, protocol), protocol, tenant, batches)
        dead = self.shard_columns(batch, tenant, batches)
        if batch.slow:  # only the series carrying histograms or exemplars take the protobuf path
            dead += self._shard_side_series(batch, tenant, batches)
        if batch.counts.metadata:  # 1.0: rare (Prometheus sends it in requests of their own); 2.0: per series
            message = batch.message
            metadata = list(message.metadata) if protocol is Protocol.V1 else v2_metadata(batch)
            self._add_metadata(self.fallback_tenant(tenant), metadata, batches)
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
        return self._record({"protocol": Protocol.V1.value, "tenant": incoming, "samples": str(points)},
                            snappy_block.compress(body_v1), reason)

    def shard_columns(self, batch: Batch, tenant: str, batches: dict[ShardKey, ShardBatch]) -> list[str]:
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
        out = route[sample_series]
        sample_tenant = self.series.slot_tenant[slots][sample_series] if self.sink.tenant_label else None
        cols = Columns(out.astype(np.uint32), timestamps, values, None)
        if starts is not None:
            if batch.created is not None:  # before rc.4: the series' created timestamp starts each sample without one
                created = np.frombuffer(batch.created, np.int64)[sample_series]
                starts = np.where(starts == 0, created, starts)
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
                body = ColumnRequest(self.series, ordered, 0, len(ordered)).encode(Protocol.V1, self._lookup(tenant))
                dead.append(self._bad_tenant(value, tenant, len(part), body))
            else:
                self._columns_onto_shards(value or self.fallback_tenant(tenant), part, batches)
        return dead

    def _columns_onto_shards(self, tenant: str, cols: Columns, batches: dict[ShardKey, ShardBatch]) -> None:
        shard_of_sample = self.series.shard[cols.series]
        for shard in np.unique(shard_of_sample).tolist():
            key = (tenant, shard)
            target = batches.get(key)
            if target is None:
                target = batches[key] = ShardBatch()
            if target.columns is None:
                target.columns = ColumnShard(self.series)
            target.columns.add(cols.take(shard_of_sample == shard))

    def _add_metadata(self, tenant: str, metadata: list[remote_v1_pb2.MetricMetadata],
                      batches: dict[ShardKey, ShardBatch]) -> None:
        known = self.families.setdefault(self._family_key(tenant), {})
        for entry in metadata:
            known[entry.metric_family_name] = (entry.type, entry.help, entry.unit)
            batches.setdefault((tenant, 0), ShardBatch()).add_metadata(entry)

    def _shard_side_series(self, batch: Batch, tenant: str, batches: dict[ShardKey, ShardBatch]) -> list[str]:
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
        return self._shard_series(pairs, tenant, batches)

    def _shard_message(self, payload: bytes, message: Any, protocol: Protocol, tenant: str,
                       batches: dict[ShardKey, ShardBatch]) -> list[str]:
        """The Python path, for a request the compiled decoder refused (the receiver's rules are not ours)."""
        if protocol is Protocol.V1:
            pairs = zip(label_keys(payload), message.timeseries, strict=True)
            metadata = list(message.metadata)
        else:
            series, metadata = v2_to_v1(message)
            pairs = ((series_key(s), s) for s in series)
        dead = self._shard_series(pairs, tenant, batches)
        self._add_metadata(self.fallback_tenant(tenant), metadata, batches)
        return dead

    def _shard_series(self, pairs: Iterable[tuple[bytes, TimeSeries]], tenant: str,
                      batches: dict[ShardKey, ShardBatch]) -> list[str]:
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
                                 SeriesRequest(refused_series).encode(Protocol.V1, self._lookup(tenant)))
                for value, refused_series in refused.items()]

    def _split_tenant(self, key: bytes, series: TimeSeries) -> tuple[bytes, TimeSeries, str]:
        """The series' tenant label value, and the series without that label if the sink drops it."""
        labels = tuple((lab.name, lab.value) for lab in series.labels)
        kept, value = split_tenant(labels, typing.cast(str, self.sink.tenant_label), self.sink.tenant_label_drop)
        if kept == labels:
            return key, series, value
        out = TimeSeries(labels=[remote_v1_pb2.Label(name=n, value=v) for n, v in kept])
        out.samples.extend(series.samples)
        out.histograms.extend(series.histograms)
        out.exemplars.extend(series.exemplars)
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
                    fresh = TimeSeries(labels=[remote_v1_pb2.Label(name=n, value=v) for n, v in labels])
                    self._relabelled[key] = (fresh.SerializeToString(), labels)
        found = self._relabelled[key]
        if found is None:
            return None
        if found is True:
            return key, series
        new_key, labels = found  # type: ignore[misc]
        out = TimeSeries(labels=[remote_v1_pb2.Label(name=n, value=v) for n, v in labels])
        out.samples.extend(series.samples)
        out.histograms.extend(series.histograms)
        out.exemplars.extend(series.exemplars)
        return new_key, out

    # -- shards -> requests ------------------------------------------------------------------
    def forward(self, messages: Iterable[tuple[bytes, dict[str, str]]]) -> list[str]:
        """Deliver a batch of messages; returns dead-letter records. Raises Stopped if interrupted."""
        batches, dead = self.shard_messages(messages)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.sink.queue.shards, thread_name_prefix=self.sink.name)
        futures = [self._executor.submit(self.send_shard, tenant, batch) for (tenant, _), batch in batches.items()]
        for future in futures:
            dead += future.result()
        return dead

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def send_shard(self, tenant: str, batch: ShardBatch) -> list[str]:
        """One shard's batch, request after request: a series is never in flight twice."""
        dead: list[str] = []
        if batch.metadata:  # the streaming graph hands each shard its tenant's metadata
            known = self.families.setdefault(self._family_key(tenant), {})
            known.update({m.metric_family_name: (m.type, m.help, m.unit) for m in batch.metadata.values()})
        if batch.metadata and self.protocol is Protocol.V1:
            dead += self.deliver(tenant, SeriesRequest([]), list(batch.metadata.values()))
        for request in batch.plan(self.sink.queue.max_samples_per_request, self.sink.queue.max_bytes_per_request):
            unsent: Request | None = request
            if self.order is not None:
                unsent = self.order.unsent(tenant, request)
            if unsent is not None:
                dead += self.deliver(tenant, unsent)
        return dead

    def _lookup(self, tenant: str):
        known = self.families.get(self._family_key(tenant), {})

        def lookup(name: str) -> FamilyMetadata | None:
            return next((known[f] for f in family_candidates(name) if f in known), None)
        return lookup

    def deliver(self, tenant: str, request: Request | list[TimeSeries],
                metadata: list[remote_v1_pb2.MetricMetadata] | None = None) -> list[str]:
        """POST until a decision; on a splittable final 4xx, deliver each half on its own."""
        if isinstance(request, list):
            request = SeriesRequest(request)
        metadata = metadata or []
        protocol = self.protocol
        if self.order is not None:
            self.order.sending(tenant, request)
        payload = request.encode(protocol, self._lookup(tenant))
        if protocol is Protocol.V1 and metadata:
            payload += metadata_payload(metadata)
        body = snappy_block.compress(payload)
        headers = headers_for(self.sink, tenant, protocol)
        count = request.points
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            result: Attempt = self.service.post(body, headers, count)
            self.stats.request(result.seconds)
            if protocol is Protocol.V2 and self._answered_like_v1(result):
                return self.deliver(tenant, request, metadata)  # the same series again, now as 1.0
            now = time.monotonic()
            if result.outcome.status is None or result.outcome.status >= 500 or result.outcome.status in (408, 429):
                failing_since = self._failing_since = self._failing_since or started
            else:  # the sink answered: whatever it said, it is up
                failing_since = self._failing_since = self._last_warned = None
            decision = self.policy.decide(attempt, result.outcome, now - min(started, failing_since or started),
                                          datetime.now(UTC))
            if decision.action is Action.SUCCESS:
                if self.order is not None:
                    self.order.accepted(tenant, request)
                self.stats.add(samples_sent=count, metadata_sent=len(metadata))
                if protocol is Protocol.V2 and result.written is not None:
                    self._check_written(request.sent_counts(), result.written)
                return []
            self.stats.add(samples_failed=count)
            # The sink's answer, unless the failure is a connection error, whose text the reason already holds.
            answer = f": {result.answer[:200]}" if result.outcome.status is not None else ""
            if decision.action is Action.RETRY:
                # a line when a sink starts failing, then one a minute, not one per retry: an outage would flood
                # the log
                quiet = self._last_warned is not None and now - self._last_warned < WARN_EVERY
                if not quiet:
                    self._last_warned = now
                log.log(logging.DEBUG if quiet else logging.WARNING, "sink %s: %s (%d samples)%s", self.sink.name,
                        decision.reason, count, answer)
                if self.stopping.wait(decision.delay_seconds):
                    raise Stopped(f"sink {self.sink.name}: stopping while it still fails ({decision.reason})")
                self.stats.add(samples_retried=count)
                continue
            if result.outcome.status in SPLITTABLE_STATUSES and refused_for_order(result.answer):
                handled = self._order_refused(tenant, request, metadata, decision.reason, result)
                if handled is not None:
                    return handled
            split = request.halves() if result.outcome.status in SPLITTABLE_STATUSES else None
            if split:
                return self.deliver(tenant, split[0], metadata) + self.deliver(tenant, split[1])
            return self._give_up(tenant, request, metadata, decision.reason, result)

    def _give_up(self, tenant: str, request: Request, metadata: list[remote_v1_pb2.MetricMetadata], reason: str,
                 result: Attempt) -> list[str]:
        """A request the sink refused for good: counted, logged, and its dead-letter record."""
        count = request.points
        self.stats.add(samples_dead_lettered=count, requests_dead_lettered=1, metadata_dead_lettered=len(metadata))
        what = f"{count} sample{'' if count == 1 else 's'}" + (f", {len(metadata)} metadata entries" if metadata
                                                             else "")
        answer = f": {result.answer[:200]}" if result.outcome.status is not None else ""
        log.error("sink %s: %s; %s dead-lettered%s", self.sink.name, reason, what, answer)
        body_v1 = snappy_block.compress(request.encode(Protocol.V1, self._lookup(tenant)) + metadata_payload(metadata))
        return [self._record({"protocol": Protocol.V1.value, "tenant": tenant, "samples": str(count)}, body_v1,
                             f"sink {self.sink.name}: {reason}: {result.answer}",
                             status=result.outcome.status, answer=result.answer)]

    def _order_refused(self, tenant: str, request: Request, metadata: list[remote_v1_pb2.MetricMetadata],
                       reason: str, result: Attempt) -> list[str] | None:
        """A final refusal for order: handled by the order guard, or None to split it as any refusal.

        A sink configured `order: any` that refuses a sample for its order is strict after all: from then on,
        for this process, it gets a record in memory (a restart forgets it; `order: strict` keeps it on disk).
        """
        if self.order is None:
            with self._fallback_lock:
                if self.order is None:
                    log.warning("sink %s: refused samples for their order (%s); remembering what it accepts from now "
                                "on, in memory, so redeliveries are not dead-lettered. Set `order: strict` for this "
                                "sink (or give the store an out-of-order window) to keep that across restarts",
                                self.sink.name, result.answer[:120])
                    self.order = OrderGuard(self.sink.name, self.stats, DeliveredLog())
        return self.order.refused(tenant, request, metadata, self.deliver,
                                  lambda part, md, why: self._give_up(tenant, part, md, f"{reason}; {why}", result))

    def _answered_like_v1(self, result: Attempt) -> bool:
        """Spec 2.0: a 415 MAY, and a 2xx without any *-Written header SHOULD, make a sender fall back to 1.0.

        A 1.x receiver reads a 2.0 body as an empty 1.0 request (2.0 reserves 1.0's field numbers)
        and answers 2xx having written nothing, so that answer is not a success. The choice is
        remembered for the life of this Forwarder (a process, or a Dataflow worker's DoFn).
        """
        status = result.outcome.status
        if status == 415:
            why = "answered 415 Unsupported Media Type"
        elif status is not None and 200 <= status <= 299 and result.written is None:
            why = f"answered {status} without X-Prometheus-Remote-Write-*-Written headers (a 1.x receiver)"
        else:
            return False
        with self._fallback_lock:
            if self.protocol is Protocol.V2:
                self.protocol = Protocol.V1
                self.stats.add(protocol_fallbacks=1)
                log.warning("sink %s: %s to a 2.0 request; sending remote-write 1.0 to it from now on",
                            self.sink.name, why)
        return True

    def _check_written(self, sent: tuple[int, int, int], written: tuple[int, int, int]) -> None:
        """A 2.0 receiver that reports writing fewer samples than sent: count the shortfall and say so."""
        missing = [max(0, a - b) for a, b in zip(sent, written, strict=True)]
        if missing[0] or missing[1]:
            self.stats.add(samples_not_written=missing[0] + missing[1])
        if any(missing):
            log.warning("sink %s: wrote %d of %d samples, %d of %d histograms, %d of %d exemplars sent (2xx)",
                        self.sink.name, written[0], sent[0], written[1], sent[1], written[2], sent[2])

    def _record(self, attributes: dict[str, str], data: bytes, error: str, status: int | None = None,
                answer: str | None = None) -> str:
        """The archive's dead-letter schema plus where it was refused (`python -m pipeline.replay` republishes it)."""
        return DeadLetter(error=error, data=data, attributes=dict(attributes), message_id=None,
                          publish_time=datetime.now(UTC).isoformat(), sink=self.sink.name, url=self.sink.url,
                          status=status, answer=answer).to_json()
