"""Rate limiting as a layer around a sink service: every POST waits for its samples' tokens first.

It wraps any `SinkService` (the HTTP service in production), so the sink driver stays unaware of
it, and each attempt is metered, retries included: what the sink sees is what is limited.
"""

from __future__ import annotations

import threading
import time

from transforms.core.retry import Attempt
from transforms.io.sink_driver import SinkService


class TokenBucket:
    """`rate` samples per second, with at most one second's worth in reserve; shared by the threads (and,
    through its owner, the DoFns) of one process."""

    def __init__(self, rate: float | None = None) -> None:
        self.rate = rate  # None or 0: unlimited
        self._lock = threading.Lock()
        self._allowance = 0.0
        self._stamp = time.monotonic()

    def take(self, samples: int) -> None:
        """Block until `samples` may be sent."""
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            self._allowance = min(self.rate, self._allowance + (now - self._stamp) * self.rate) - samples
            self._stamp = now
            wait = -self._allowance / self.rate if self._allowance < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


class RateLimitedService:
    def __init__(self, inner: SinkService, bucket: TokenBucket) -> None:
        self.inner = inner
        self.bucket = bucket

    def post(self, body: bytes, headers: dict[str, str], points: int) -> Attempt:
        self.bucket.take(points)
        return self.inner.post(body, headers, points)
