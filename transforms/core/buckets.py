"""A cumulative histogram of durations (bucket counts and sum) kept by whoever measures.

The loops and the sink drivers own one each; the pipeline's /metrics collector reads snapshots of
them at scrape time (pipeline/metrics.py), so no prometheus_client object lives in core code.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

# Seconds: from a fast local sink request (1 ms) to a bounded run over a large backlog (minutes).
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
RUN_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


class Buckets:
    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self.lock:
            self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
            self.sum += seconds

    def cumulative(self) -> tuple[list[tuple[float, int]], float]:
        """[(upper bound, observations <= it)], +Inf last, and the sum: Prometheus' histogram shape."""
        with self.lock:
            counts, total = list(self.counts), self.sum
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            running += count
            out.append((bound, running))
        return out, total
