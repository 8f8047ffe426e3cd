"""Draining a Pub/Sub subscription and decoding what the receiver published (tests and benches)."""

from __future__ import annotations

import dataclasses
import time

from google.cloud import pubsub_v1

from transforms import codec
from transforms.protocol import Protocol


@dataclasses.dataclass
class Message:
    data: bytes
    attributes: dict[str, str]

    def decode(self) -> codec.DecodedRequest:
        return codec.decode(self.data, Protocol(self.attributes["protocol"]), 1 << 30)


class Subscription:
    def __init__(self, path: str) -> None:
        self.path = path
        self.client = pubsub_v1.SubscriberClient()

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
