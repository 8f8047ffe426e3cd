"""One sink's counters and recent request latencies, shared by the builder, the driver and /metrics.

A lock guards them: the driver's shard threads and the metrics collector read and write them at once.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

from transforms.core.buckets import REQUEST_BUCKETS, Buckets

LATENCY_WINDOW = 10_000


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
