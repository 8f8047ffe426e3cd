"""The streaming graph's send step for a strict sink (`order: strict`): keyed, stateful, ordered.

Per (tenant, shard) key, a stateful DoFn:
- holds the key's shard chunks in a bag until an event-time timer at the first held chunk's publish time plus
  the reorder horizon (the sink's `batch_send_deadline`), or until `max_chunks` are held. Elements carry their
  Pub/Sub publish time and the Pub/Sub watermark is held back by unacked (and redelivered) messages, so the
  timer fires once every message published up to then has been read: a flush holds every series' samples of
  that span, and the forwarder sends each series merged and sorted by timestamp;
- keeps the key's delivered record (transforms/core/sink/delivered.py: per series, the exact timestamps the
  sink accepted) in Beam keyed state. On Dataflow, state is durable and moves with its key, so the record
  survives a worker restart and a shard moving to another worker; the local streaming runner keeps it in the
  process (a kill forgets it, as it forgets what its Pub/Sub read acked).

The record is written back after each flush that delivered something, with a random token; each worker also
keeps the log it wrote in memory, with the token, and reuses it while the state still holds that token (no
decoding per flush), or while the state holds the token it started from (a bundle whose commit failed after
the sink answered: the memory knows more than the state, and all of it is true).

Bounded: per key at most `max_samples` timestamps (oldest forgotten first; a floor then says what is no longer
known, so a forgotten sample is never taken for delivered) and `max_series` series (least recently delivered
forgotten first). The defaults spread one sink's in-process budget over its shards.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms.combiners import CountCombineFn
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    CombiningValueStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)

from transforms.core.sink.batching import ShardBatch, ShardChunk
from transforms.core.sink.config import SinkConfig
from transforms.core.sink.delivered import DEFAULT_MAX_SAMPLES, DEFAULT_MAX_SERIES, DeliveredLog
from transforms.core.sink.forwarder import Forwarder, SinkService
from transforms.core.sink.order import OrderGuard
from transforms.io.deadletters import write_dead_letters
from transforms.io.http_sink import HttpService

TOKEN = 16  # bytes of the random token in front of a saved record
CACHED_KEYS = 64  # records a worker keeps decoded in memory (keys it served last)
Key = tuple[str, int]  # (tenant, shard)
CHUNKS = BagStateSpec("chunks", coders.PickleCoder())  # shard chunks held until the flush
HELD = CombiningValueStateSpec("held", CountCombineFn())  # how many
DELIVERED = ReadModifyWriteStateSpec("delivered", coders.BytesCoder())  # token + DeliveredLog.to_bytes()
FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)  # the first held chunk's publish time + the horizon
# Beam finds state and timers through these parameter defaults (module-level: one object each).
CHUNKS_PARAM, HELD_PARAM = beam.DoFn.StateParam(CHUNKS), beam.DoFn.StateParam(HELD)
DELIVERED_PARAM, FLUSH_PARAM = beam.DoFn.StateParam(DELIVERED), beam.DoFn.TimerParam(FLUSH)


def per_key_limits(sink: SinkConfig) -> tuple[int, int]:
    """One sink's record budget (transforms/core/sink/delivered.py) spread over its shards."""
    shards = max(1, sink.queue.shards)
    return max(10_000, DEFAULT_MAX_SAMPLES // shards), max(1_000, DEFAULT_MAX_SERIES // shards)


class SendInOrder(beam.DoFn):
    """((tenant, shard), ShardChunk) -> dead-letter file paths; see the module's docstring."""

    def __init__(self, sink: SinkConfig, dead_letter_path: str, *, horizon_seconds: float | None = None,
                 max_chunks: int = 200, max_samples: int | None = None, max_series: int | None = None,
                 service: Any = None) -> None:
        """`service`: a callable returning the sink's transport (default HttpService(sink)); tests pass a model."""
        self.sink = sink
        self.dead_letter_path = dead_letter_path
        self.horizon_seconds = sink.queue.flush_seconds if horizon_seconds is None else horizon_seconds
        self.max_chunks = max_chunks
        samples, series = per_key_limits(sink)
        self.max_samples = max_samples or samples
        self.max_series = max_series or series
        self.service = service

    def setup(self) -> None:
        from transforms.beam.sinks import SinkMetrics  # sinks.py imports this module

        transport: SinkService = self.service() if self.service is not None else HttpService(self.sink)
        self.forwarder = Forwarder(self.sink, service=transport)
        self.metrics = SinkMetrics(self.sink)
        self.cache: OrderedDict[Key, tuple[bytes, bytes, DeliveredLog]] = OrderedDict()

    def process(self, element: tuple[Key, ShardChunk], timestamp=beam.DoFn.TimestampParam, chunks=CHUNKS_PARAM,
                held=HELD_PARAM, delivered=DELIVERED_PARAM, flush=FLUSH_PARAM) -> Iterator[str]:
        key, chunk = element
        chunks.add(chunk)
        held.add(1)
        count = held.read()
        if count == 1:
            flush.set(timestamp + self.horizon_seconds)
        if count >= self.max_chunks:
            yield from self._flush(key, chunks, held, delivered, flush)

    @on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, chunks=CHUNKS_PARAM, held=HELD_PARAM, delivered=DELIVERED_PARAM,
                 flush=FLUSH_PARAM) -> Iterator[str]:
        yield from self._flush(tuple(key), chunks, held, delivered, flush)

    def _flush(self, key: Key, chunks: Any, held: Any, delivered: Any, flush: Any) -> Iterator[str]:
        pending = list(chunks.read())
        chunks.clear()
        held.clear()
        flush.clear()
        if not pending:
            return
        tenant = key[0]
        log = self._record(key, delivered.read())
        forwarder = self.forwarder
        forwarder.order = OrderGuard(self.sink.name, forwarder.stats, log)
        forwarder.series.make_room()  # between flushes only: a batch holds ids of the output series
        batch = ShardBatch()
        for chunk in pending:
            batch.add_chunk(chunk, forwarder.series)
        dead = forwarder.send_shard(tenant, batch)
        if log.changes:
            delivered.write(self._save(key, log))
        self.metrics.publish(forwarder.stats)
        path = write_dead_letters(self.dead_letter_path, dead, sink=self.sink.name)
        if path:
            yield path

    def _record(self, key: Key, saved: bytes | None) -> DeliveredLog:
        """The key's record: this worker's copy if the state is what it wrote (or started from), else decoded."""
        token = saved[:TOKEN] if saved else b""
        cached = self.cache.get(key)
        if cached is not None and token in (cached[0], cached[1]):
            self.cache.move_to_end(key)
            return cached[2]
        log, _ = DeliveredLog.from_bytes(saved[TOKEN:] if saved else b"", self.max_samples, self.max_series)
        self._remember(key, token, token, log)
        return log

    def _save(self, key: Key, log: DeliveredLog) -> bytes:
        token = os.urandom(TOKEN)
        started_from = self.cache[key][0] if key in self.cache else b""
        self._remember(key, started_from, token, log)
        return token + log.to_bytes()

    def _remember(self, key: Key, parent: bytes, token: bytes, log: DeliveredLog) -> None:
        self.cache[key] = (token, parent, log)
        self.cache.move_to_end(key)
        while len(self.cache) > CACHED_KEYS:
            self.cache.popitem(last=False)
