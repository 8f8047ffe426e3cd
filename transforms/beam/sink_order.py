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

The record is kept as the local loop keeps its files (transforms/io/delivered_state.py): a snapshot, and a
journal of each flush's deliveries appended to a bag (a blind write of that flush's entries only), folded
into a new snapshot once it outgrows the snapshot (and 1 MB). A small meta value carries a random token per
write. Each worker keeps the records it wrote in memory with their token and reuses one while the state holds
that token, so a flush reads a few bytes of state, not the record; or while the state holds the token it
started from (a bundle whose commit failed after the sink answered: the memory knows more than the state, all
of it true, and the next write is a whole snapshot).

Bounded: per key at most `max_samples` timestamps (oldest forgotten first; a floor then says what is no longer
known, so a forgotten sample is never taken for delivered) and `max_series` series (least recently delivered
forgotten first). The defaults spread one sink's in-process budget over its shards.
"""

from __future__ import annotations

import logging
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
from transforms.core.sink.builder import RequestBuilder
from transforms.core.sink.config import SinkConfig
from transforms.core.sink.delivered import DEFAULT_MAX_SAMPLES, DEFAULT_MAX_SERIES, DeliveredLog
from transforms.core.sink.order import OrderGuard
from transforms.io.deadletters import write_dead_letters
from transforms.io.http_sink import HttpService
from transforms.io.sink_driver import SinkDriver, SinkService, wall_clock

LOG = logging.getLogger(__name__)
TOKEN = 16  # bytes of the random token written with each record (meta), so a worker knows its copy is current
CACHED_KEYS = 64  # records a worker keeps decoded in memory (keys it served last)
Key = tuple[str, int]  # (tenant, shard)
COMPACT_BYTES = 1 << 20  # the journal is folded into the snapshot once it passes this and the snapshot's size
CHUNKS = BagStateSpec("chunks", coders.PickleCoder())  # shard chunks held until the flush
HELD = CombiningValueStateSpec("held", CountCombineFn())  # how many
FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)  # the first held chunk's publish time + the horizon
# The delivered record: a snapshot (DeliveredLog.to_bytes), the journal entries of the flushes since, and a
# small meta value (token, journal bytes, snapshot bytes) read on every flush; the big two only on a cache miss.
META = ReadModifyWriteStateSpec("meta", coders.PickleCoder())
SNAPSHOT = ReadModifyWriteStateSpec("snapshot", coders.BytesCoder())
JOURNAL = BagStateSpec("journal", coders.BytesCoder())
# Beam finds state and timers through these parameter defaults (module-level: one object each).
CHUNKS_PARAM, HELD_PARAM, FLUSH_PARAM = beam.DoFn.StateParam(CHUNKS), beam.DoFn.StateParam(HELD), \
    beam.DoFn.TimerParam(FLUSH)
META_PARAM, SNAPSHOT_PARAM, JOURNAL_PARAM = beam.DoFn.StateParam(META), beam.DoFn.StateParam(SNAPSHOT), \
    beam.DoFn.StateParam(JOURNAL)
Meta = tuple[bytes, int, int]  # token, journal bytes, snapshot bytes


def per_key_limits(sink: SinkConfig) -> tuple[int, int]:
    """One sink's record budget (transforms/core/sink/delivered.py) spread over its shards."""
    shards = max(1, sink.queue.shards)
    return max(10_000, DEFAULT_MAX_SAMPLES // shards), max(1_000, DEFAULT_MAX_SERIES // shards)


class SendInOrder(beam.DoFn):
    """((tenant, shard), ShardChunk) -> dead-letter file paths; see the module's docstring."""

    def __init__(self, sink: SinkConfig, dead_letter_path: str, *, horizon_seconds: float | None = None,
                 max_chunks: int = 200, max_samples: int | None = None, max_series: int | None = None,
                 compact_bytes: int = COMPACT_BYTES, service: Any = None) -> None:
        """`compact_bytes`: 0 writes a whole snapshot per flush. `service`: a callable returning the sink's
        transport (default HttpService(sink)); tests pass a model."""
        self.sink = sink
        self.dead_letter_path = dead_letter_path
        self.horizon_seconds = sink.queue.flush_seconds if horizon_seconds is None else horizon_seconds
        self.max_chunks = max_chunks
        samples, series = per_key_limits(sink)
        self.max_samples = max_samples or samples
        self.max_series = max_series or series
        self.compact_bytes = compact_bytes
        self.service = service

    def setup(self) -> None:
        from transforms.beam.sinks import SinkMetrics  # sinks.py imports this module

        transport: SinkService = self.service() if self.service is not None else HttpService(self.sink)
        self.driver = SinkDriver(RequestBuilder(self.sink, clock=wall_clock), transport)
        self.metrics = SinkMetrics(self.sink)
        self.cache: OrderedDict[Key, tuple[bytes, bytes, DeliveredLog]] = OrderedDict()  # token, parent, record

    def process(self, element: tuple[Key, ShardChunk], timestamp=beam.DoFn.TimestampParam, chunks=CHUNKS_PARAM,
                held=HELD_PARAM, flush=FLUSH_PARAM, meta=META_PARAM, snapshot=SNAPSHOT_PARAM,
                journal=JOURNAL_PARAM) -> Iterator[str]:
        key, chunk = element
        chunks.add(chunk)
        held.add(1)
        count = held.read()
        if count == 1:
            flush.set(timestamp + self.horizon_seconds)
        if count >= self.max_chunks:
            yield from self._flush(key, chunks, held, flush, meta, snapshot, journal)

    @on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, chunks=CHUNKS_PARAM, held=HELD_PARAM, flush=FLUSH_PARAM,
                 meta=META_PARAM, snapshot=SNAPSHOT_PARAM, journal=JOURNAL_PARAM) -> Iterator[str]:
        yield from self._flush(tuple(key), chunks, held, flush, meta, snapshot, journal)

    def _flush(self, key: Key, chunks: Any, held: Any, flush: Any, meta: Any, snapshot: Any,
               journal: Any) -> Iterator[str]:
        pending = list(chunks.read())
        chunks.clear()
        held.clear()
        flush.clear()
        if not pending:
            return
        saved: Meta = meta.read() or (b"", 0, 0)
        log, whole = self._record(key, saved[0], snapshot, journal)
        entries: list[bytes] = []
        log.journal = entries.append  # this flush's deliveries, as the record takes them
        driver = self.driver
        driver.order = OrderGuard(self.sink.name, driver.stats, log)
        series = driver.builder.series
        series.make_room()  # between flushes only: a batch holds ids of the output series
        batch = ShardBatch()
        for chunk in pending:
            batch.add_chunk(chunk, series)
        try:
            dead = driver.send_shard(tenant=key[0], batch=batch)
        except BaseException:
            # the record may now hold deliveries the state lacks: a fresh token, with the state's as parent,
            # makes the retried bundle reuse it and write it whole
            self._remember(key, saved[0], os.urandom(TOKEN), log)
            raise
        finally:
            log.journal = None
        if entries or whole:
            self._save(key, log, saved, whole, entries, meta, snapshot, journal)
        self.metrics.publish(driver.stats)
        path = write_dead_letters(self.dead_letter_path, dead, sink=self.sink.name)
        if path:
            yield path

    def _record(self, key: Key, token: bytes, snapshot: Any, journal: Any) -> tuple[DeliveredLog, bool]:
        """The key's record, and whether the state lacks some of it (then the next write is a whole snapshot)."""
        cached = self.cache.get(key)
        if cached is not None and token in (cached[0], cached[1]):
            self.cache.move_to_end(key)
            return cached[2], token != cached[0]
        try:
            log, _ = DeliveredLog.from_bytes(snapshot.read() or b"", self.max_samples, self.max_series,
                                             journal=b"".join(journal.read()))
        except ValueError as exc:  # never block the shard on its record: start a new one, and say so
            log = DeliveredLog(self.max_samples, self.max_series)
            LOG.error("sink %s: the delivered record of %s is unreadable (%s); starting an empty one: redeliveries "
                      "of what it held may be dead-lettered", self.sink.name, key, exc)
        self._remember(key, token, token, log)
        return log, False

    def _save(self, key: Key, log: DeliveredLog, saved: Meta, whole: bool, entries: list[bytes], meta: Any,
              snapshot: Any, journal: Any) -> None:
        token, journal_bytes, snapshot_bytes = os.urandom(TOKEN), saved[1] + sum(map(len, entries)), saved[2]
        if whole or not self.compact_bytes or journal_bytes > max(snapshot_bytes, self.compact_bytes):
            data = log.to_bytes()
            snapshot.write(data)
            journal.clear()
            journal_bytes, snapshot_bytes = 0, len(data)
        else:
            journal.add(b"".join(entries))
        meta.write((token, journal_bytes, snapshot_bytes))
        self._remember(key, saved[0], token, log)

    def _remember(self, key: Key, parent: bytes, token: bytes, log: DeliveredLog) -> None:
        self.cache[key] = (token, parent, log)
        self.cache.move_to_end(key)
        while len(self.cache) > CACHED_KEYS:
            self.cache.popitem(last=False)
