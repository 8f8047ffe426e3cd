"""Beam wrappers around transforms/core/sink for the streaming graph (Dataflow).

Each sink reads its own Pub/Sub subscription, so a slow or broken sink holds back nothing else.
Series are keyed by (tenant, shard) and batched per key with GroupIntoBatches: a runner processes
one key's state serially, which keeps each series' requests in order across bundles and workers. A strict
sink (`order: strict`) gets SendInOrder instead (transforms/beam/sink_order.py): a reorder horizon and its
delivered record in keyed state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.beam.archive import DEAD_LETTER
from transforms.beam.sink_order import SendInOrder
from transforms.core.protocol import Protocol
from transforms.core.sink.batching import ShardBatch, ShardChunk, spread_metadata
from transforms.core.sink.builder import RequestBuilder
from transforms.core.sink.config import SinkConfig
from transforms.core.sink.stats import SinkStats
from transforms.io.deadletters import write_dead_letters
from transforms.io.http_sink import HttpService
from transforms.io.sink_driver import SinkDriver, wall_clock

__all__ = ["ForwardToSink", "SendInOrder", "SendToSink", "ShardForSink", "SinkMetrics", "WriteUndecodable"]

CHUNKS_PER_BATCH = 200  # shard chunks per GroupIntoBatches output (the send step re-cuts into requests)


class SinkMetrics:
    """Mirrors a sink's SinkStats into Beam counters (namespace sink/NAME)."""

    def __init__(self, sink: SinkConfig) -> None:
        namespace = f"sink/{sink.name}"
        self.counters = {name: Metrics.counter(namespace, name) for name in SinkStats.FIELDS}
        self.last = dict.fromkeys(SinkStats.FIELDS, 0)
        self.latency = Metrics.distribution(namespace, "request_latency_ms")
        self.seen_latencies = 0

    def publish(self, stats: SinkStats) -> None:
        with stats.lock:
            counts = dict(stats.counts)
            fresh = list(stats.latencies)[-(counts["requests"] - self.seen_latencies):] if counts["requests"] > \
                self.seen_latencies else []
        for name, value in counts.items():
            if value > self.last[name]:
                self.counters[name].inc(value - self.last[name])
        self.last = counts
        self.seen_latencies = counts["requests"]
        for seconds in fresh:
            self.latency.update(int(seconds * 1000))


class ShardForSink(beam.DoFn):
    """A message -> ((tenant, shard), ShardChunk) per shard it touches: columns for float samples, protobuf
    pieces for series carrying histograms or exemplars."""

    def __init__(self, sink: SinkConfig) -> None:
        self.sink = sink

    def setup(self) -> None:
        # only the request builder: sharding opens no connection pool and resolves no credentials
        self.builder = RequestBuilder(self.sink, clock=wall_clock)
        self.metrics = SinkMetrics(self.sink)  # what sharding counts: samples_dropped_by_rules

    def process(self, message: Any) -> Iterator[Any]:
        batches, dead = self.builder.shard_messages([(message.data, dict(message.attributes or {}))])
        self.metrics.publish(self.builder.stats)
        for record in dead:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, record)
        if self.sink.protocol is Protocol.V2:  # every shard needs it for its series' metadata
            spread_metadata(batches, self.sink.queue.shards)
        for key, batch in batches.items():
            yield key, batch.export()


class SendToSink(beam.DoFn):
    """One (tenant, shard) batch -> ordered, retried requests; refused data -> dead-letter files."""

    def __init__(self, sink: SinkConfig, dead_letter_path: str) -> None:
        self.sink = sink
        self.dead_letter_path = dead_letter_path

    def setup(self) -> None:
        self.driver = SinkDriver(RequestBuilder(self.sink, clock=wall_clock), HttpService(self.sink))
        self.metrics = SinkMetrics(self.sink)

    def process(self, element: tuple[tuple[str, int], Iterable[ShardChunk]]) -> Iterator[str]:
        (tenant, _), chunks = element
        series = self.driver.builder.series
        series.make_room()  # between batches only: a batch holds ids of the output series
        batch = ShardBatch()
        for chunk in chunks:
            batch.add_chunk(chunk, series)
        dead = self.driver.send_shard(tenant, batch)
        self.metrics.publish(self.driver.stats)
        path = write_dead_letters(self.dead_letter_path, dead, sink=self.sink.name)
        if path:
            yield path


class WriteUndecodable(beam.DoFn):
    def __init__(self, sink: SinkConfig, dead_letter_path: str) -> None:
        self.sink = sink
        self.dead_letter_path = dead_letter_path

    def start_bundle(self) -> None:
        self.records: list[str] = []

    def process(self, record: str) -> None:
        self.records.append(record)

    def finish_bundle(self) -> None:
        write_dead_letters(self.dead_letter_path, self.records, sink=self.sink.name)
        self.records = []


class ForwardToSink(beam.PTransform):
    """Messages (from this sink's own subscription) -> the sink. Outputs dead-letter file paths."""

    def __init__(self, sink: SinkConfig, dead_letter_path: str) -> None:
        super().__init__()
        self.sink = sink
        self.dead_letter_path = dead_letter_path

    def expand(self, messages):
        sharded = messages | "ShardBySeries" >> beam.ParDo(ShardForSink(self.sink)).with_outputs(
            DEAD_LETTER, main="chunks")
        _ = sharded[DEAD_LETTER] | "WriteUndecodable" >> beam.ParDo(WriteUndecodable(self.sink, self.dead_letter_path))
        if self.sink.order == "strict":  # keyed state: the delivered record, and a reorder horizon
            return sharded.chunks | "SendInOrder" >> beam.ParDo(
                SendInOrder(self.sink, self.dead_letter_path, max_chunks=CHUNKS_PER_BATCH))
        return (sharded.chunks
                | "BatchPerShard" >> beam.GroupIntoBatches(CHUNKS_PER_BATCH,
                                                           max_buffering_duration_secs=self.sink.queue.flush_seconds)
                | "SendInOrder" >> beam.ParDo(SendToSink(self.sink, self.dead_letter_path)))
