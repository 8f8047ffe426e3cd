"""Draining a Pub/Sub subscription and decoding what the receiver published (tests and benches)."""

from __future__ import annotations

import dataclasses
import time

from google.cloud import pubsub_v1

from transforms.core.protocol import MAX_DECOMPRESSED, Protocol
from transforms.core.wire import codec
from transforms.io.pubsub import subscriber_client


@dataclasses.dataclass
class Message:
    data: bytes
    attributes: dict[str, str]

    def decode(self) -> codec.DecodedRequest:
        return codec.decode(self.data, Protocol(self.attributes["protocol"]), MAX_DECOMPRESSED)


class Subscription:
    def __init__(self, path: str) -> None:
        self.path = path
        self.client = subscriber_client()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def pull(self, max_messages: int = 1000) -> list[Message]:
        """One synchronous pull; acks what it got."""
        response = self.client.pull(
            request={"subscription": self.path, "max_messages": max_messages, "return_immediately": True},
            timeout=30,
        )
        if response.received_messages:
            self.client.acknowledge(request={"subscription": self.path,
                                             "ack_ids": [m.ack_id for m in response.received_messages]})
        return [Message(m.message.data, dict(m.message.attributes)) for m in response.received_messages]

    def all_held_elsewhere(self) -> bool:
        """True when a pull finds nothing: every published, unacked message is leased by another
        subscriber (e.g. a pipeline holding them in an open window). Whatever this pull did get is
        handed back at once (ack deadline 0), so it takes nothing away."""
        response = self.client.pull(
            request={"subscription": self.path, "max_messages": 1000, "return_immediately": True}, timeout=30)
        if not response.received_messages:
            return True
        self.client.modify_ack_deadline(request={"subscription": self.path, "ack_deadline_seconds": 0,
                                                 "ack_ids": [m.ack_id for m in response.received_messages]})
        return False

    def drain(self, expect: int | None = None, timeout: float = 30.0, quiet: float = 1.0) -> list[Message]:
        """Pull until `expect` messages arrived, or until nothing came for `quiet` seconds."""
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        last_seen = time.monotonic()
        while time.monotonic() < deadline:
            got = self.pull()
            if got:
                messages += got
                last_seen = time.monotonic()
            if expect is not None and len(messages) >= expect:
                break
            if expect is None and time.monotonic() - last_seen > quiet:
                break
            if not got:
                time.sleep(0.05)
        return messages


def publish_requests(topic: str, messages: list[tuple[object, str]], protocol: Protocol = Protocol.V1,
                     received_at: str = "2026-11-24T00:00:00.000Z") -> list[bytes]:
    """Publish remote-write messages as the receiver would: (message, tenant) -> encoded bodies."""
    publisher = pubsub_v1.PublisherClient()
    bodies = []
    futures = []
    for message, tenant in messages:
        body = codec.encode(message)  # type: ignore[arg-type]
        attributes = codec.message_attributes(protocol, tenant, received_at, codec.count(message))  # type: ignore
        futures.append(publisher.publish(topic, body, **attributes))
        bodies.append(body)
    for future in futures:
        future.result(timeout=60)
    publisher.transport.close()
    return bodies


def publish_raw(topic: str, data: bytes, attributes: dict[str, str]) -> None:
    publisher = pubsub_v1.PublisherClient()
    publisher.publish(topic, data, **attributes).result(timeout=60)
    publisher.transport.close()
