"""Pub/Sub for the local loops and the tools: one subscriber factory, byte-bounded pulls, leases, acks.

Why a factory: on the emulator path (PUBSUB_EMULATOR_HOST) google-cloud-pubsub opens a plain
gRPC channel that keeps gRPC's default 4 MiB limit on received messages, so any pull whose
response is larger (100 messages of 44 KiB, or one 5 MB message) fails, and fails again on every
retry. Against Google's service the generated transport already opens its channel with both
limits at -1 (unlimited); the factory makes the two paths alike.

Why byte-bounded pulls: a pull asks for a number of messages, not bytes, and the receiver
publishes messages from a few KiB up to 9.5 MB. The Puller sizes `max_messages` from the largest
message it has seen lately, so one pull asks for about PULL_TARGET_BYTES at most.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import grpc
from google.api_core import exceptions as google_exceptions
from google.cloud import pubsub_v1
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

log = logging.getLogger(__name__)

UNLIMITED = -1
PULL_MAX_MESSAGES = 1000  # the service's own cap per pull
PULL_TARGET_BYTES = 32 << 20  # what one pull may ask for, estimated from recent message sizes
FIRST_SIZE_GUESS = 1 << 20  # before anything was seen: 32 messages of 1 MiB
MIN_SIZE_ESTIMATE = 1 << 10
# After a response too large for the client, pull one message at a time for this long: the
# failed pull leased every message it held until their ack deadline, and one-message pulls keep a
# redelivered oversized message from taking others down with it again.
ONE_AT_A_TIME_SECONDS = 30.0
PULL_TIMEOUT_SECONDS = 30
LEASE_SECONDS = 60
# Pub/Sub's default ack deadline is 10 s: extend at once after a pull, then well within it.
LEASE_EVERY = 5.0
ACK_CHUNK = 1000
SERVICE_ENDPOINT = "pubsub.googleapis.com:443"
# A launch-time TCP connect: a stopped emulator refuses at once, and a few seconds cover a real network path
# (the client's own retries would take a minute before saying "Timeout of 60.0s").
PROBE_SECONDS = 3.0


def _channel_options(max_receive_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", max_receive_bytes),
            ("grpc.max_send_message_length", UNLIMITED)]


def subscriber_client(max_receive_bytes: int = UNLIMITED) -> pubsub_v1.SubscriberClient:
    """A SubscriberClient that accepts pull responses of any size, on the emulator and the service.

    `max_receive_bytes` exists for tests that need a response the client cannot take.
    """
    emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    if emulator:
        channel = grpc.insecure_channel(emulator, options=_channel_options(max_receive_bytes))
        return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))
    if max_receive_bytes == UNLIMITED:
        return pubsub_v1.SubscriberClient()  # the service's transport opens its channel unlimited already

    def channel_with_limit(host: str, **kwargs: Any) -> grpc.Channel:
        options = dict(kwargs.pop("options", None) or [])
        options.update(_channel_options(max_receive_bytes))
        return SubscriberGrpcTransport.create_channel(host, options=list(options.items()), **kwargs)

    return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel_with_limit))


def endpoint() -> str:
    """host:port the clients talk to: the emulator's when PUBSUB_EMULATOR_HOST is set, else Google's."""
    return os.environ.get("PUBSUB_EMULATOR_HOST") or SERVICE_ENDPOINT


def unreachable(timeout: float = PROBE_SECONDS) -> str | None:
    """Why Pub/Sub's endpoint takes no TCP connection, in one line saying what to check; None when it does."""
    target = endpoint()
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except ValueError:
        reason = "not host:port"
    except TimeoutError:
        reason = f"no answer within {timeout:g}s"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    if os.environ.get("PUBSUB_EMULATOR_HOST"):
        hint = "is the emulator running there (make pubsub), and is PUBSUB_EMULATOR_HOST right?"
    else:
        hint = "check the network, proxy and firewall, or set PUBSUB_EMULATOR_HOST=host:port to use the emulator"
    return f"cannot reach Pub/Sub at {target} ({reason}): {hint}"


def is_response_too_large(exc: BaseException) -> bool:
    """gRPC refused a pull response over the client's receive limit (seen as '429 ... larger than max')."""
    return isinstance(exc, google_exceptions.ResourceExhausted) and "larger than max" in str(exc)


class Lease(threading.Thread):
    """Keeps extending the ack deadline of the messages we hold, until they are acked."""

    def __init__(self, subscriber: pubsub_v1.SubscriberClient, subscription: str) -> None:
        super().__init__(daemon=True, name="ack-lease")
        self.subscriber = subscriber
        self.subscription = subscription
        self.ack_ids: list[str] = []
        # Publish time (Unix seconds) of the oldest message pulled and not yet acked: the backlog's age
        # as far as this loop can see it (the emulator has no Cloud Monitoring to ask).
        self.oldest_publish_time: float | None = None
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def hold(self, ack_ids: list[str], oldest_publish_time: float | None = None) -> None:
        with self.lock:
            self.ack_ids.extend(ack_ids)
            if oldest_publish_time is not None:
                known = self.oldest_publish_time
                self.oldest_publish_time = oldest_publish_time if known is None else min(known, oldest_publish_time)
        self.extend(ack_ids)

    def release(self) -> list[str]:
        """Forget what is held (after acking it)."""
        with self.lock:
            held, self.ack_ids = self.ack_ids, []
            self.oldest_publish_time = None
        return held

    def backlog_age(self, now: float) -> float:
        """Seconds since the oldest unacked message we pulled was published; 0 when we hold none."""
        with self.lock:
            oldest = self.oldest_publish_time
        return max(0.0, now - oldest) if oldest is not None else 0.0

    def extend(self, ack_ids: list[str], seconds: int = LEASE_SECONDS) -> None:
        for i in range(0, len(ack_ids), ACK_CHUNK):
            try:
                self.subscriber.modify_ack_deadline(request={
                    "subscription": self.subscription, "ack_ids": ack_ids[i:i + ACK_CHUNK],
                    "ack_deadline_seconds": seconds})
            except google_exceptions.GoogleAPIError as exc:  # redelivery (a duplicate) is the fallback
                log.warning("could not modify ack deadlines: %s", exc)

    def nack(self) -> None:
        """Give everything held back to Pub/Sub for redelivery now (still unacked: the backlog keeps its age)."""
        with self.lock:
            oldest = self.oldest_publish_time
        self.extend(self.release(), seconds=0)
        with self.lock:
            if oldest is not None and (self.oldest_publish_time is None or oldest < self.oldest_publish_time):
                self.oldest_publish_time = oldest

    def run(self) -> None:
        while not self.stopped.wait(LEASE_EVERY):
            with self.lock:
                held = list(self.ack_ids)
            self.extend(held)


@dataclasses.dataclass
class PullStats:
    pulls: int = 0
    messages: int = 0
    bytes: int = 0
    largest_pull: int = 0  # messages in the largest single pull
    answered: int = 0  # pulls Pub/Sub answered, empty or not (readiness: the subscription can be read)
    failed_pulls: int = 0
    too_large_pulls: int = 0  # responses the client could not take: see docs/operations.md


class Puller:
    """Synchronous pulls from one subscription, bounded by bytes as well as by count.

    Every message pulled is held by the lease at once. A failed pull returns [] after a pause; a
    response too large for the client is logged as an error, counted, and for a while the pulls ask
    for one message at a time, so the subscription's other messages keep flowing past it.
    """

    def __init__(self, subscriber: pubsub_v1.SubscriberClient, subscription: str, lease: Lease,
                 stopping: threading.Event, target_bytes: int = PULL_TARGET_BYTES) -> None:
        self.subscriber = subscriber
        self.subscription = subscription
        self.lease = lease
        self.stopping = stopping
        self.target_bytes = target_bytes
        self.size_estimate = FIRST_SIZE_GUESS
        self.one_at_a_time_until = 0.0
        self.stats = PullStats()

    def max_messages(self) -> int:
        if time.monotonic() < self.one_at_a_time_until:
            return 1
        return max(1, min(PULL_MAX_MESSAGES, self.target_bytes // self.size_estimate))

    def pull(self) -> list[Any]:
        asked = self.max_messages()
        try:
            response = self.subscriber.pull(
                request={"subscription": self.subscription, "max_messages": asked, "return_immediately": True},
                timeout=PULL_TIMEOUT_SECONDS)
        except google_exceptions.GoogleAPIError as exc:
            self.stats.failed_pulls += 1
            if is_response_too_large(exc):
                self.stats.too_large_pulls += 1
                self.one_at_a_time_until = time.monotonic() + ONE_AT_A_TIME_SECONDS
                log.error("a pull of up to %d messages from %s was too large for the client (%s); pulling one "
                          "message at a time. A message that still fails is redelivered until the "
                          "subscription's dead-letter policy takes it", asked, self.subscription, exc)
            else:
                log.warning("pull from %s failed, retrying: %s", self.subscription, exc)
            self.stopping.wait(1.0)
            return []
        self.stats.answered += 1
        received = list(response.received_messages)
        if received:
            self.lease.hold([r.ack_id for r in received],
                            min(r.message.publish_time.timestamp() for r in received))
            sizes = [len(r.message.data) for r in received]
            self.stats.pulls += 1
            self.stats.messages += len(received)
            self.stats.bytes += sum(sizes)
            self.stats.largest_pull = max(self.stats.largest_pull, len(received))
            # Follow the largest recent message at once; grow back by halving the estimate per pull.
            self.size_estimate = max(MIN_SIZE_ESTIMATE, max(sizes), self.size_estimate // 2)
        return received


def acknowledge(subscriber: pubsub_v1.SubscriberClient, subscription: str, ack_ids: Sequence[str]) -> None:
    for i in range(0, len(ack_ids), ACK_CHUNK):
        subscriber.acknowledge(request={"subscription": subscription, "ack_ids": list(ack_ids[i:i + ACK_CHUNK])})
