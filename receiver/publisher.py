"""Publishing to Pub/Sub: one batcher per worker process, confirmed publishes only.

The receiver answers a request only once Pub/Sub has confirmed its messages, so the publisher's job is
to confirm quickly and cheaply. google-cloud-pubsub's high-level publisher starts a commit thread per
batch, wraps each call in retry/timeout/logging layers and copies every message into proto-plus objects;
under load that glue cost several times the decode itself. Here a few long-lived sender threads per
worker each gather the messages of concurrent requests (up to `max_latency` after the first) into one
`Publish` RPC on the client's own gRPC channel (the same endpoint, emulator and credentials rules as
google-cloud-pubsub), and resolve each message's future from the response. The calls are blocking
ones: grpc's asynchronous calls start a channel-spin thread whenever none is running, which at a
paced load means a thread per call. `SENDERS` threads keep that many RPCs in flight.

A failed RPC fails every message of its batch: those requests answer 503 and their senders retry.
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future
from typing import Protocol as TypingProtocol

import grpc
from google.api_core import exceptions as google_exceptions
from google.cloud import pubsub_v1
from google.pubsub_v1.types import PublishRequest, PublishResponse

_READY_CACHE_SECONDS = 5.0
_PUBLISH_METHOD = "/google.pubsub.v1.Publisher/Publish"
# Pub/Sub's own limits for one Publish call: 1000 messages, 10 MB (a request's framing included).
MAX_BATCH_MESSAGES = 1000
MAX_BATCH_BYTES = 9_500_000
SENDERS = 4


class Unavailable(Exception):
    """We cannot take the request now; the sender must retry (503 + Retry-After)."""


class Publisher(TypingProtocol):
    """What the app needs from Pub/Sub; tests may inject a fake for pure-logic cases."""

    def publish(self, data: bytes, attributes: dict[str, str]) -> Future:
        """Start a publish; the future resolves once Pub/Sub confirms. Raises Unavailable when saturated."""

    def check_ready(self) -> None:
        """Raise if the topic cannot be reached."""


_Pending = tuple[bytes, dict[str, str], Future]


class PubSubPublisher:
    """Micro-batching publisher for one topic; its client and thread start on first use (after fork)."""

    def __init__(self, topic: str, max_outstanding_bytes: int = 256 * 1024 * 1024, *,
                 max_latency: float = 0.002, timeout: float = 60.0) -> None:
        self.topic = topic
        self.max_outstanding_bytes = max_outstanding_bytes
        self.max_latency = max_latency
        self.timeout = timeout
        self._client: pubsub_v1.PublisherClient | None = None
        self._publish_rpc: grpc.UnaryUnaryMultiCallable | None = None
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._queue: collections.deque[_Pending] = collections.deque()
        self._outstanding = 0  # bytes queued or in an RPC, not yet confirmed
        self._senders: list[threading.Thread] = []
        self._ready_until = 0.0

    @property
    def client(self) -> pubsub_v1.PublisherClient:
        """google-cloud-pubsub's client: its channel for Publish, and GetTopic for readiness."""
        with self._lock:
            return self._client_locked()

    def _client_locked(self) -> pubsub_v1.PublisherClient:
        if self._client is None:
            self._client = pubsub_v1.PublisherClient()
            channel = self._client.transport.grpc_channel
            # request bytes are built here; only the (small) response is parsed by upb
            self._publish_rpc = channel.unary_unary(_PUBLISH_METHOD, request_serializer=None,
                                                    response_deserializer=PublishResponse.pb().FromString)
        return self._client

    def publish(self, data: bytes, attributes: dict[str, str]) -> Future:
        future: Future = Future()
        with self._lock:
            if self._outstanding + len(data) > self.max_outstanding_bytes:
                raise Unavailable(f"over --max-outstanding-bytes ({self.max_outstanding_bytes}) of unconfirmed "
                                  "publishes; retry")
            self._client_locked()
            if not self._senders:
                self._senders = [threading.Thread(target=self._run, name=f"pubsub-sender-{n}", daemon=True)
                                 for n in range(SENDERS)]
                for sender in self._senders:
                    sender.start()
            self._outstanding += len(data)
            self._queue.append((data, attributes, future))
            self._wakeup.notify()
        return future

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._send(batch)
            except Exception as exc:  # noqa: BLE001 - every failure must reach the waiting requests
                self._settle(batch, error=exc)

    def _next_batch(self) -> list[_Pending]:
        """Wait for a message, then up to `max_latency` for others to join it (or until a batch is full)."""
        with self._lock:
            while not self._queue:
                self._wakeup.wait()
            deadline = time.monotonic() + self.max_latency
            while len(self._queue) < MAX_BATCH_MESSAGES and (left := deadline - time.monotonic()) > 0:
                self._wakeup.wait(left)
            batch, size = [], len(self.topic)
            while self._queue and len(batch) < MAX_BATCH_MESSAGES:
                data = self._queue[0][0]
                if batch and size + len(data) + 1024 > MAX_BATCH_BYTES:
                    break
                batch.append(self._queue.popleft())
                size += len(data) + 1024  # a generous allowance for attributes and framing
            return batch

    def _send(self, batch: list[_Pending]) -> None:
        request = PublishRequest.pb()(topic=self.topic)
        for data, attributes, _ in batch:
            request.messages.add(data=data, attributes=attributes)
        assert self._publish_rpc is not None
        try:
            response = self._publish_rpc(request.SerializeToString(), timeout=self.timeout)
        except grpc.RpcError as exc:
            self._settle(batch, error=google_exceptions.from_grpc_error(exc))
            return
        if len(response.message_ids) != len(batch):
            self._settle(batch, error=RuntimeError(
                f"Pub/Sub confirmed {len(response.message_ids)} of {len(batch)} messages"))
            return
        self._settle(batch, message_ids=list(response.message_ids))

    def _settle(self, batch: list[_Pending], *, error: BaseException | None = None,
                message_ids: list[str] | None = None) -> None:
        with self._lock:
            self._outstanding -= sum(len(data) for data, _, _ in batch)
        for index, (_, _, future) in enumerate(batch):
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(message_ids[index] if message_ids else "")

    def check_ready(self) -> None:
        if time.monotonic() < self._ready_until:
            return
        # no retries: readiness must answer within seconds, not after the default 60 s retry deadline
        try:
            self.client.get_topic(request={"topic": self.topic}, retry=None, timeout=5.0)
        except google_exceptions.PermissionDenied:
            pass  # Pub/Sub answered: a publish-only role may not read topics, and it need not
        self._ready_until = time.monotonic() + _READY_CACHE_SECONDS
