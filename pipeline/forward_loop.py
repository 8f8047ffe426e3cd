"""The local runner's forwarding: one loop per sink, on the sink's own Pub/Sub subscription.

Each loop pulls what is there (up to the sink's flush deadline, ~1 s, after the first message),
delivers it through the sink's Forwarder (transforms/io/sink_driver.py: sharded, ordered, retried),
writes what the sink refused for good to the dead-letter store, and only then acks. While a sink is down the loop keeps
retrying the same batch, its messages' ack deadlines extended, and the rest waits in Pub/Sub: a
sink down for minutes loses nothing, and the archive and the other sinks never wait for it.

These loops call the forwarding core directly rather than through a bounded Beam run per flush:
a run costs ~0.5 s of CPU, more than the forwarding itself, and would defeat a 1 s deadline.
The streaming graph wraps the same core in DoFns (transforms/beam/sinks.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from apache_beam.io.filesystems import FileSystems

from transforms.core.sink.config import SinkConfig
from transforms.io.deadletters import write_dead_letters
from transforms.io.delivered_state import DeliveredState, state_path
from transforms.io.http_sink import HttpService
from transforms.io.pubsub import LEASE_SECONDS, Lease, Puller, PullStats, acknowledge, subscriber_client
from transforms.io.sink_driver import Forwarder, Stopped

log = logging.getLogger(__name__)
# Bound memory per flush (a backlog drains in batches of this size): messages, and their bytes.
MAX_BATCH_MESSAGES = 5000
MAX_BATCH_BYTES = 64 << 20
LEASE_MARGIN = 5  # seconds past a killed run's last lease extension before its messages are surely back


class ForwardLoop(threading.Thread):
    def __init__(self, sink: SinkConfig, subscription: str, dead_letter_path: str, stopping: threading.Event,
                 on_batch: Callable[[dict[str, Any]], None] | None = None) -> None:
        super().__init__(daemon=True, name=f"forward-{sink.name}")
        self.sink = sink
        self.subscription = subscription
        self.dead_letter_path = dead_letter_path
        self.stopping = stopping
        self.on_batch = on_batch or (lambda stats: None)
        # `order: strict`: what the sink accepted, per series, across restarts, to tell a redelivery from a real
        # loss. With `any` (the default) no record, no files, no gathering after a kill.
        self.delivered_state = (DeliveredState(state_path(dead_letter_path, sink.name)) if sink.order == "strict"
                                else None)
        self.forwarder = Forwarder(sink, service=HttpService(sink), stopping=stopping,
                                   delivered=None if self.delivered_state is None else self.delivered_state.load())
        self.error: BaseException | None = None
        self.pull_stats = PullStats()  # replaced by the running Puller's own
        self.lease: Lease | None = None  # the running one: what is held, and the backlog's age

    def pull_batch(self, puller: Puller, hold_until: float | None = None) -> tuple[list[Any], list[str]]:
        """Wait for a first message, then take what arrives until the flush deadline or a drained queue.

        With `hold_until` (a monotonic time), keep taking what arrives until then: after an unclean stop,
        the killed run's leased messages come back only when their ack deadline expires, and delivering
        newer ones first would make a strict sink refuse them as out of order.
        """
        messages: list[Any] = []
        ack_ids: list[str] = []
        seen: set[str] = set()
        first = None
        size = 0
        while not self.stopping.is_set() and len(messages) < MAX_BATCH_MESSAGES and size < MAX_BATCH_BYTES:
            holding = hold_until is not None and time.monotonic() < hold_until
            if not holding and first is not None and time.monotonic() - first >= self.sink.queue.flush_seconds:
                break
            received = puller.pull()
            if not received:
                if messages and not holding:
                    break  # nothing more waiting: send now rather than sit on fresh data
                self.stopping.wait(0.05)
                continue
            first = first or time.monotonic()
            ack_ids += [r.ack_id for r in received]
            for r in received:
                if r.message.message_id not in seen:
                    seen.add(r.message.message_id)
                    messages.append((r.message.data, dict(r.message.attributes)))
                    size += len(r.message.data)
        return messages, ack_ids

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by the launcher, which then stops everything
            self.error = exc
            log.exception("sink %s: forward loop failed", self.sink.name)
            self.stopping.set()

    def _run(self) -> None:
        subscriber = subscriber_client()
        lease = self.lease = Lease(subscriber, self.subscription)
        lease.start()
        puller = Puller(subscriber, self.subscription, lease, self.stopping)
        self.pull_stats = puller.stats
        hold_until = None
        if self.delivered_state is not None and self.delivered_state.begin():
            hold_until = time.monotonic() + LEASE_SECONDS + LEASE_MARGIN
            log.warning("sink %s: the previous run did not stop cleanly; gathering messages for %d s before "
                        "delivering, until its leased messages come back, so they are sent in order",
                        self.sink.name, LEASE_SECONDS + LEASE_MARGIN)
        try:
            while not self.stopping.is_set():
                messages, ack_ids = self.pull_batch(puller, hold_until)
                hold_until = None
                if not messages:
                    continue
                started = time.time()
                try:
                    dead = self.forwarder.forward(messages)
                except Stopped as exc:
                    log.info("%s; %d messages stay in Pub/Sub", exc, len(messages))
                    lease.nack()
                    break
                write_dead_letters(self.dead_letter_path, dead, sink=self.sink.name)
                if self.delivered_state is not None and self.forwarder.order is not None:
                    # before the ack: what the sink accepted is on disk (each 2xx was journaled at once)
                    self.delivered_state.after_flush(self.forwarder.order.delivered)
                acknowledge(subscriber, self.subscription, ack_ids)  # only now: delivered or dead-lettered
                lease.release()
                stats = {**self.forwarder.stats.snapshot(), "pull_failures": puller.stats.failed_pulls,
                         "pulls_too_large": puller.stats.too_large_pulls}
                log.info("sink %s: forwarded %d messages in %.2fs; totals %s", self.sink.name, len(messages),
                         time.time() - started, json.dumps(stats))
                self.on_batch({"sink": self.sink.name, "messages": len(messages), **stats})
        finally:
            lease.stopped.set()
            self.forwarder.close()
            if self.delivered_state is not None and self.forwarder.order is not None:
                if self.forwarder.order.delivered.changes:
                    self.delivered_state.save(self.forwarder.order.delivered)
                self.delivered_state.close()
                if not lease.ack_ids:  # nothing left leased (acked or nacked): the next run need not wait
                    self.delivered_state.end()
            subscriber.close()


def start_forward_loops(sinks: list[SinkConfig], input_subscription: str, dead_letter_path: str,
                        stopping: threading.Event, options: Any) -> list[ForwardLoop]:
    FileSystems.set_options(options)
    loops = [ForwardLoop(s, s.subscription_for(input_subscription), dead_letter_path, stopping) for s in sinks]
    for loop in loops:
        loop.start()
    return loops
