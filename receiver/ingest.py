"""The write path without HTTP: negotiate, validate, split, publish, wait for Pub/Sub's confirmation.

Flask-free, so it is tested directly; receiver/views.py only maps HTTP onto it. A request is
accepted only after every Pub/Sub message it became is confirmed; a rejected request publishes nothing.
Errors: transforms.core.errors.RemoteWriteError (4xx, the sender's fault) or publisher.Unavailable (503).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent import futures

from receiver.config import ReceiverConfig
from receiver.metrics import ReceiverMetrics
from receiver.publisher import Publisher, Unavailable
from transforms.core.errors import InvalidPayload, PayloadTooLarge
from transforms.core.protocol import DEFAULT_TENANT, HEADER_TENANT, TENANT_RULE, Protocol, format_ms, is_valid_tenant
from transforms.core.wire import codec, snappy_block
from transforms.core.wire.validate_only import KnownLabelSets
from transforms.core.wire.validation import Counts


def now_rfc3339() -> str:
    return format_ms(time.time_ns() // 1_000_000)


class ByteBudget:
    """Bytes reserved by requests in progress in this worker, at most `limit` (one request always fits)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    @contextlib.contextmanager
    def reserve(self, size: int) -> Iterator[None]:
        with self._lock:
            if self._used and self._used + size > self.limit:
                raise Unavailable(f"over --max-in-flight-bytes ({self.limit}) of requests being decoded in this "
                                  "worker; retry")
            self._used += size
        try:
            yield
        finally:
            with self._lock:
                self._used -= size


class Ingest:
    """One per app (per gunicorn worker): owns the in-flight slots and talks to the publisher."""

    def __init__(self, config: ReceiverConfig, publisher: Publisher, metrics: ReceiverMetrics) -> None:
        self.config = config
        self.publisher = publisher
        self.metrics = metrics
        self._slots = threading.BoundedSemaphore(config.max_in_flight)
        self.in_flight_bytes = ByteBudget(config.max_in_flight_bytes)
        self._limits = config.request_limits
        # label sets already validated by this worker (their keys: the receiver builds no columns or heads)
        self.known = KnownLabelSets(config.name_validation)

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """Hold one of --max-in-flight slots for the block; none free is Unavailable (503)."""
        if not self._slots.acquire(blocking=False):
            raise Unavailable(f"over the in-flight limit of {self.config.max_in_flight} requests; retry")
        self.metrics.in_flight.inc()
        try:
            yield
        finally:
            self.metrics.in_flight.dec()
            self._slots.release()

    def negotiate(self, content_type: str | None, content_encoding: str | None,
                  content_length: int | None) -> Protocol:
        """The request's protocol from its headers; refuses (415/413) before the body is read."""
        protocol = codec.protocol_for_content_type(content_type)
        codec.check_content_encoding(content_encoding)
        if content_length is not None and content_length > self.config.max_body_bytes:
            raise PayloadTooLarge(f"body of {content_length} bytes exceeds {self.config.max_body_bytes}")
        return protocol

    @staticmethod
    def tenant(header: str | None) -> str:
        tenant = (header or "").strip() or DEFAULT_TENANT
        if not is_valid_tenant(tenant):
            raise InvalidPayload(f"invalid {HEADER_TENANT} {tenant!r}: use {TENANT_RULE}")
        return tenant

    def accept(self, body: bytes, protocol: Protocol, tenant: str) -> Counts:
        """Validate and publish a body; returns what it carried once Pub/Sub confirmed all of it."""
        self.metrics.bytes.inc(len(body))
        config = self.config
        declared = snappy_block.uncompressed_length(body) if body else 0
        # what decompression is about to allocate; a header over the limit is refused (413) unallocated
        reserve = declared if declared <= config.max_decompressed_bytes else 0
        with self.in_flight_bytes.reserve(reserve):
            decoded = codec.validate(body, protocol, config.max_decompressed_bytes, self._limits, self.known)
            if decoded.uncompressed_bytes:  # an empty request (a sender's probe) carries nothing to keep
                self.publish(body, decoded, tenant)
        self.metrics.accepted(protocol.value, decoded.counts)
        return decoded.counts

    def publish(self, body: bytes, decoded: codec.ValidatedRequest, tenant: str) -> None:
        """Publish the body (split by series if over --max-message-bytes) and wait for every confirmation."""
        config = self.config
        received_at = now_rfc3339()
        if len(body) <= config.max_message_bytes:
            parts = [codec.Part(body, decoded.counts)]
        else:
            parts = codec.split(decoded.message, decoded.protocol, config.max_message_bytes)
        started = time.perf_counter()
        pending = []
        for index, part in enumerate(parts):
            attributes = codec.message_attributes(decoded.protocol, tenant, received_at, part.counts)
            if len(parts) > 1:
                attributes.update(part=str(index), parts=str(len(parts)))
            pending.append(self.publisher.publish(part.body, attributes))
        done, not_done = futures.wait(pending, timeout=config.publish_timeout)
        failures = [f.exception() for f in done if f.exception() is not None]
        if not_done or failures:
            for f in not_done:
                f.cancel()
            reason = f"timed out after {config.publish_timeout}s" if not_done else str(failures[0])
            raise Unavailable(f"cannot publish to Pub/Sub: {reason}")
        self.metrics.publish_seconds.observe(time.perf_counter() - started)
        self.metrics.messages.inc(len(parts))
