"""The local runner's design: a loop of bounded Beam runs that ack only after finalising.

Beam's own Pub/Sub read on the local runner pulls 10 messages at a time and acks them at once
(a crash loses them), and its wall-clock watermark drops backlogs and old samples as late data.
So locally we pull ourselves, and every `window_size` seconds (or every `max_batch_samples`)
run a bounded (batch) Beam pipeline over what was pulled. Its files are finalised (renamed into
place) before the run returns, and only then are its messages acked. Held messages' ack deadlines
are extended meanwhile.

Crash guarantee: at-least-once. A crash before the ack redelivers the messages, which the next run
archives again; a crash between finalising and acking can therefore duplicate lines, never lose them.
There is no watermark, so nothing is ever late.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.utils.shared import Shared

from pipeline.bounded_run import BoundedArchiveRun
from pipeline.options import ArchiveOptions
from transforms.core.buckets import RUN_BUCKETS, Buckets
from transforms.core.metadata import MetadataStore
from transforms.io.pubsub import Lease, Puller, PullStats, acknowledge, subscriber_client

log = logging.getLogger(__name__)
RETRY_MAX_SECONDS = 60.0
# Beam's local batch runner, named so that no run tries Prism (and its binary download) first.
BOUNDED_RUNNER = "FnApiRunner"
# Besides max_batch_samples: what one batch may hold in message bytes (a few 9.5 MB messages
# carry few samples each but are large).
MAX_BATCH_BYTES = 256 << 20


def _int(value: str | None) -> int:
    """An attribute count; a malformed one counts 0 here (the message itself is still archived)."""
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


def run_label(window_start: float, message_ids: list[str]) -> str:
    """File label of one bounded run: its window start, plus a digest of its messages."""
    digest = hashlib.sha1("\n".join(sorted(message_ids)).encode()).hexdigest()[:10]
    return f"{datetime.fromtimestamp(window_start, UTC):%Y%m%dT%H%M%SZ}-{digest}"


class LocalLoop:
    def __init__(self, options: PipelineOptions, on_run: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.options = options
        self.archive = options.view_as(ArchiveOptions)
        self.subscription = self.archive.input_subscription
        self.stopping = threading.Event()
        self.on_run = on_run or (lambda stats: None)
        self.totals = dict.fromkeys(("runs", "messages", "samples", "lines", "files", "dead_letters"), 0)
        self.pull_stats = PullStats()  # replaced by the running Puller's own
        self.lease: Lease | None = None  # the running one: what is held, and the backlog's age
        self.run_seconds = Buckets(RUN_BUCKETS)  # bounded runs that finished, for /metrics
        # The remembered 1.0 metadata types outlive each bounded run: the runs' DoFns acquire this
        # store through Beam's Shared handle, and holding it here keeps it alive between runs.
        self.metadata = Shared()
        self.metadata_store = self.metadata.acquire(MetadataStore)
        self.bounded: BoundedArchiveRun | None = None  # built on the first window, closed when the loop ends

    def stop(self, *_: object) -> None:
        log.info("stop requested: finishing the current window")
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGTERM, self.stop)

    def _batch_options(self) -> PipelineOptions:
        """The user's options for a bounded run: same runner family, batch mode."""
        options = PipelineOptions.from_dictionary(
            self.options.get_all_options(drop_default=True, retain_unknown_options=True))
        options.view_as(StandardOptions).streaming = False
        options.view_as(StandardOptions).runner = BOUNDED_RUNNER  # any local alias: batch on this machine
        return options

    def pull_batch(self, puller: Puller) -> tuple[float, list[Any], list[str]]:
        """Pull for one window (or until max_batch_samples / MAX_BATCH_BYTES): (window start, messages, ack ids)."""
        start = time.time()
        messages: list[Any] = []
        ack_ids: list[str] = []
        seen: set[str] = set()
        samples = 0
        size = 0
        while not self.stopping.is_set() and time.time() - start < self.archive.window_size:
            received = puller.pull()
            if not received:
                # A drained backlog need not wait out the window; small batches do, to bound file count.
                if samples >= self.archive.max_batch_samples // 10:
                    break
                self.stopping.wait(0.2)
                continue
            ack_ids += [r.ack_id for r in received]
            for r in received:
                m = r.message
                if m.message_id in seen:  # a redelivery of a message already in this batch
                    continue
                seen.add(m.message_id)
                attributes = dict(m.attributes)
                messages.append(PubsubMessage(m.data, attributes, message_id=m.message_id,
                                              publish_time=m.publish_time))
                samples += _int(attributes.get("samples"))
                size += len(m.data)
            if samples >= self.archive.max_batch_samples or size >= MAX_BATCH_BYTES:
                break
        return start, messages, ack_ids

    def run_bounded(self, window_start: float, messages: list[Any]) -> dict[str, int]:
        """One bounded run; returns its archive counters once every file is finalised."""
        if self.bounded is None:
            self.bounded = BoundedArchiveRun(self._batch_options(), self.metadata)
        return self.bounded.run(run_label(window_start, [m.message_id for m in messages]), messages)

    def run(self) -> None:
        FileSystems.set_options(self.options)
        subscriber = subscriber_client()
        lease = self.lease = Lease(subscriber, self.subscription)
        lease.start()
        puller = Puller(subscriber, self.subscription, lease, self.stopping)
        self.pull_stats = puller.stats
        failures = 0
        try:
            while not self.stopping.is_set():
                window_start, messages, ack_ids = self.pull_batch(puller)
                if not messages:
                    continue
                started = time.time()
                try:
                    counters = self.run_bounded(window_start, messages)
                except Exception:  # e.g. the object store is down: keep the data in Pub/Sub and retry
                    failures += 1
                    delay = min(RETRY_MAX_SECONDS, 2.0 ** failures)
                    log.exception("bounded run failed (%d in a row); nothing acked, redelivery in %.0fs",
                                  failures, delay)
                    lease.nack()
                    self.metadata_store.forget_archived()  # the retry archives its metadata records again
                    self.stopping.wait(delay)
                    continue
                failures = 0
                acknowledge(subscriber, self.subscription, ack_ids)  # only now: every file of the run is finalised
                lease.release()
                run = {"runs": 1, "messages": len(messages), "samples": counters.get("samples_converted", 0),
                       "lines": counters.get("lines", 0), "files": counters.get("files_written", 0),
                       "dead_letters": counters.get("dead_letters", 0)}
                for key, value in run.items():
                    self.totals[key] = self.totals.get(key, 0) + value
                self.run_seconds.observe(time.time() - started)
                stats = {**run, "seconds": time.time() - started, "max_pull": puller.stats.largest_pull,
                         "pull_failures": puller.stats.failed_pulls, "pulls_too_large": puller.stats.too_large_pulls,
                         **{f"total_{k}": v for k, v in self.totals.items()}}
                log.info("archived %d messages (%d samples, %d files, %d dead letters) in %.1fs; totals %s",
                         run["messages"], run["samples"], run["files"], run["dead_letters"], stats["seconds"],
                         json.dumps(self.totals))
                self.on_run(stats)
        finally:
            lease.stopped.set()
            subscriber.close()
            if self.bounded is not None:
                self.bounded.close()
