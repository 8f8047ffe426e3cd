"""The driver of one sink: requests from the builder, POSTed through the service until a decision.

The three parts of a sink, as Vector's remote-write sink splits them:

- the request builder (transforms/core/sink/builder.py, pure): shards, plans and encodes requests, and
  builds dead-letter records;
- the service (transforms/io/http_sink.HttpService, optionally behind transforms/io/rate_limit.py): one POST;
- this driver: the retry policy's decisions (transforms/core/retry.py) with sleeps a stopping Event cuts
  short, the 2.0 -> 1.0 fallback, the order guard (transforms/core/sink/order.py), splitting on a final
  4xx, dead letters; and `Forwarder.forward`, which sends a flush's shards in parallel on a thread pool.

Used as is by the local runner's forward loop (pipeline/forward_loop.py), and by the Beam DoFns of the
streaming graph and the restore (transforms/beam/sinks.py, transforms/beam/restore.py).
"""

from __future__ import annotations

import logging
import threading
import time
import typing
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from transforms.core.protocol import Protocol
from transforms.core.retry import Action, Attempt, Jitter, RetryPolicy
from transforms.core.sink.batching import SeriesRequest, ShardBatch, TimeSeries
from transforms.core.sink.builder import Batches, Metadata, Request, RequestBuilder
from transforms.core.sink.config import SinkConfig
from transforms.core.sink.delivered import DeliveredLog, refused_for_order
from transforms.core.sink.order import OrderGuard
from transforms.core.sink.stats import SinkStats

log = logging.getLogger(__name__)
# Final answers where splitting can isolate the refused series (out-of-order, duplicate, too large).
# Others (401, 403, 404 ...) refuse the request, not its content: splitting would only multiply them.
SPLITTABLE_STATUSES = frozenset({400, 409, 413, 422})
WARN_EVERY = 60.0  # seconds between log lines about the same failing sink's retries


def wall_clock() -> datetime:
    """The clock of dead-letter records and of Retry-After dates."""
    return datetime.now(UTC)


class Stopped(Exception):
    """The process is stopping while a sink is still failing: nothing is acked, Pub/Sub redelivers."""


class SinkService(typing.Protocol):
    """What the driver needs from a transport (transforms/io/http_sink.HttpService in production)."""

    def post(self, body: bytes, headers: dict[str, str], points: int) -> Attempt:
        """One attempt. `points`: the samples and histograms the body carries, for layers that meter them
        (transforms/io/rate_limit.py)."""


class SinkDriver:
    def __init__(self, builder: RequestBuilder, service: SinkService, *, stopping: threading.Event | None = None,
                 policy: RetryPolicy | None = None, delivered: DeliveredLog | None = None) -> None:
        sink = builder.sink
        self.sink = sink
        self.builder = builder
        self.stats = builder.stats
        self.service = service
        self.stopping = stopping or threading.Event()
        self.policy = policy or RetryPolicy(initial_delay=sink.queue.min_backoff, max_delay=sink.queue.max_backoff,
                                            jitter=Jitter.EQUAL, max_elapsed=sink.queue.max_retry_duration)
        # `order: strict`: what the sink accepted per series, to tell a redelivery from a real loss
        # (transforms/core/sink/order.py). With `any`, nothing, until the sink refuses a sample for its order.
        self.order: OrderGuard | None = None
        if sink.order == "strict" or delivered is not None:
            self.order = OrderGuard(sink.name, self.stats, delivered if delivered is not None else DeliveredLog())
        # What this sink is spoken to in: a 2.0 sink that answers like a 1.x receiver gets 1.0 from then on.
        self.protocol = sink.protocol
        self._fallback_lock = threading.Lock()
        # When this sink's current run of failures began (None while it answers): max_retry_duration bounds the
        # outage, not each request, so a bounded job gives up on a dead sink once, not once per request.
        self._failing_since: float | None = None
        self._last_warned: float | None = None

    def send_shard(self, tenant: str, batch: ShardBatch) -> list[str]:
        """One shard's batch, request after request: a series is never in flight twice."""
        dead: list[str] = []
        if batch.metadata:  # the streaming graph hands each shard its tenant's metadata
            self.builder.learn_metadata(tenant, batch.metadata.values())
        if batch.metadata and self.protocol is Protocol.V1:
            dead += self.deliver(tenant, SeriesRequest([]), list(batch.metadata.values()))
        for request in self.builder.plan(batch):
            unsent: Request | None = request
            if self.order is not None:
                unsent = self.order.unsent(tenant, request)
            if unsent is not None:
                dead += self.deliver(tenant, unsent)
        return dead

    def deliver(self, tenant: str, request: Request | list[TimeSeries], metadata: Metadata | None = None
                ) -> list[str]:
        """POST until a decision; on a splittable final 4xx, deliver each half on its own."""
        if isinstance(request, list):
            request = SeriesRequest(request)
        metadata = metadata or []
        protocol = self.protocol
        if self.order is not None:
            self.order.sending(tenant, request)
        body = self.builder.body(tenant, request, protocol, metadata)
        headers = self.builder.headers(tenant, protocol)
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
                                          wall_clock())
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

    def _give_up(self, tenant: str, request: Request, metadata: Metadata, reason: str, result: Attempt) -> list[str]:
        """A request the sink refused for good: counted, logged, and its dead-letter record."""
        count = request.points
        self.stats.add(samples_dead_lettered=count, requests_dead_lettered=1, metadata_dead_lettered=len(metadata))
        what = f"{count} sample{'' if count == 1 else 's'}" + (f", {len(metadata)} metadata entries" if metadata
                                                             else "")
        answer = f": {result.answer[:200]}" if result.outcome.status is not None else ""
        log.error("sink %s: %s; %s dead-lettered%s", self.sink.name, reason, what, answer)
        return [self.builder.dead_letter(tenant, request, metadata, f"sink {self.sink.name}: {reason}: {result.answer}",
                                         result.outcome.status, result.answer)]

    def _order_refused(self, tenant: str, request: Request, metadata: Metadata, reason: str,
                       result: Attempt) -> list[str] | None:
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
        remembered for the life of this driver (a process, or a Dataflow worker's DoFn).
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


class Forwarder(SinkDriver):
    """A sink's builder and driver together, with `forward`: a flush of messages, its shards sent in parallel
    (one thread per shard at most, each shard's requests one after another)."""

    def __init__(self, sink: SinkConfig, *, service: SinkService, stats: SinkStats | None = None,
                 stopping: threading.Event | None = None, policy: RetryPolicy | None = None,
                 delivered: DeliveredLog | None = None, builder: RequestBuilder | None = None) -> None:
        super().__init__(builder or RequestBuilder(sink, clock=wall_clock, stats=stats), service, stopping=stopping,
                         policy=policy, delivered=delivered)
        self._executor: ThreadPoolExecutor | None = None

    def shard_messages(self, messages: Iterable[tuple[bytes, dict[str, str]]]) -> tuple[Batches, list[str]]:
        return self.builder.shard_messages(messages)

    def forward(self, messages: Iterable[tuple[bytes, dict[str, str]]]) -> list[str]:
        """Deliver a batch of messages; returns dead-letter records. Raises Stopped if interrupted."""
        batches, dead = self.builder.shard_messages(messages)
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
