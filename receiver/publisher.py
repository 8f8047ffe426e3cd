"""Publishing to Pub/Sub: one client per worker process, confirmed publishes only."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Protocol as TypingProtocol

from google.api_core import exceptions as google_exceptions
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.publisher.exceptions import FlowControlLimitError
from google.cloud.pubsub_v1.types import LimitExceededBehavior, PublisherOptions, PublishFlowControl

# A request waits for its own publish confirmation, so batching only adds latency;
# a short window still groups concurrent requests into one Pub/Sub call.
_BATCH = pubsub_v1.types.BatchSettings(max_messages=100, max_bytes=9_900_000, max_latency=0.002)
_READY_CACHE_SECONDS = 5.0


class Unavailable(Exception):
    """We cannot take the request now; the sender must retry (503 + Retry-After)."""


class Publisher(TypingProtocol):
    """What the app needs from Pub/Sub; tests may inject a fake for pure-logic cases."""

    def publish(self, data: bytes, attributes: dict[str, str]) -> Future:
        """Start a publish; the future resolves once Pub/Sub confirms. Raises Unavailable when saturated."""

    def check_ready(self) -> None:
        """Raise if the topic cannot be reached."""


class PubSubPublisher:
    """google-cloud-pubsub publisher for one topic; created lazily so it is per gunicorn worker."""

    def __init__(self, topic: str, max_outstanding_bytes: int = 256 * 1024 * 1024) -> None:
        self.topic = topic
        # Over this many unconfirmed bytes the client raises FlowControlLimitError: publish() says Unavailable.
        self._flow = PublishFlowControl(message_limit=100_000, byte_limit=max_outstanding_bytes,
                                        limit_exceeded_behavior=LimitExceededBehavior.ERROR)
        self._client: pubsub_v1.PublisherClient | None = None
        self._lock = threading.Lock()
        self._ready_until = 0.0

    @property
    def client(self) -> pubsub_v1.PublisherClient:
        with self._lock:
            if self._client is None:
                self._client = pubsub_v1.PublisherClient(
                    batch_settings=_BATCH, publisher_options=PublisherOptions(flow_control=self._flow))
            return self._client

    def publish(self, data: bytes, attributes: dict[str, str]) -> Future:
        future = self.client.publish(self.topic, data, **attributes)
        # google-cloud-pubsub reports a flow-control refusal as an already failed future, not a raise
        if future.done() and isinstance(refusal := future.exception(), FlowControlLimitError):
            raise Unavailable(f"over --max-outstanding-bytes of unconfirmed publishes: {refusal}") from refusal
        return future

    def check_ready(self) -> None:
        if time.monotonic() < self._ready_until:
            return
        # no retries: readiness must answer within seconds, not after the default 60 s retry deadline
        try:
            self.client.get_topic(request={"topic": self.topic}, retry=None, timeout=5.0)
        except google_exceptions.PermissionDenied:
            pass  # Pub/Sub answered: a publish-only role may not read topics, and it need not
        self._ready_until = time.monotonic() + _READY_CACHE_SECONDS
