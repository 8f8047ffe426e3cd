"""Pure logic of the Pub/Sub edge: what the service's client does by default, and byte-bounded pulls."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import pubsub_v1
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

from transforms.io import pubsub


def test_the_services_client_opens_its_channel_without_a_receive_limit(monkeypatch):
    """What docs/pipeline.md states: against Google's service the generated transport asks for no limit
    (-1); only the emulator path keeps gRPC's 4 MiB default, which subscriber_client() lifts."""
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    seen: list[list[tuple[str, Any]]] = []

    def capture(*args: Any, **kwargs: Any) -> Any:
        seen.append(list(kwargs.get("options") or []))
        raise RuntimeError("captured")

    monkeypatch.setattr(SubscriberGrpcTransport, "create_channel", classmethod(lambda cls, *a, **k: capture(*a, **k)))
    with pytest.raises(RuntimeError, match="captured"):
        pubsub_v1.SubscriberClient(credentials=AnonymousCredentials())
    assert ("grpc.max_receive_message_length", -1) in seen[0]


class FakeSubscriber:
    """Answers pulls from a script of message sizes (or exceptions), recording what was asked."""

    def __init__(self, script: list[list[int] | Exception]) -> None:
        self.script = script
        self.asked: list[int] = []
        self.published_at = 1_000_000.0  # publish time of what the next pull returns

    def pull(self, request: dict[str, Any], timeout: float) -> Any:
        self.asked.append(request["max_messages"])
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        published = datetime.fromtimestamp(self.published_at, UTC)
        received = [SimpleNamespace(ack_id=f"a{i}", message=SimpleNamespace(data=b"x" * size, publish_time=published))
                    for i, size in enumerate(step[:request["max_messages"]])]
        return SimpleNamespace(received_messages=received)

    def modify_ack_deadline(self, request: dict[str, Any]) -> None:
        pass


def puller(script: list[list[int] | Exception]) -> tuple[pubsub.Puller, FakeSubscriber]:
    fake = FakeSubscriber(script)
    lease = pubsub.Lease(fake, "projects/p/subscriptions/s")  # type: ignore[arg-type]
    stopping = threading.Event()
    stopping.set()  # a failed pull's pause returns at once
    return pubsub.Puller(fake, "projects/p/subscriptions/s", lease, stopping), fake  # type: ignore[arg-type]


def test_pulls_ask_for_about_the_target_bytes_whatever_the_message_size():
    kib44, mb9 = 44 << 10, 9_400_000
    p, fake = puller([[kib44] * 32] + [[kib44] * 1000] * 6 + [[mb9]] + [[kib44] * 1000] * 2)
    for _ in range(10):
        p.pull()
    first, *growing = fake.asked[:7]
    assert first == pubsub.PULL_TARGET_BYTES // pubsub.FIRST_SIZE_GUESS
    assert growing == sorted(growing) and growing[-1] == pubsub.PULL_TARGET_BYTES // kib44, fake.asked
    assert fake.asked[7] * kib44 <= pubsub.PULL_TARGET_BYTES
    # after a 9.4 MB message: a few messages per pull, never 1000 x 9.4 MB
    assert fake.asked[8] == pubsub.PULL_TARGET_BYTES // mb9
    assert fake.asked[9] == pubsub.PULL_TARGET_BYTES // (mb9 // 2)  # and grows back by halving the estimate


def test_a_response_too_large_is_an_error_counted_and_the_next_pull_asks_for_one(caplog):
    too_large = google_exceptions.ResourceExhausted(
        "Stream removed (CLIENT: Received message larger than max (4493411 vs. 4194304))")
    p, fake = puller([too_large, [1000], [1000]])
    assert p.pull() == []
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert p.stats.too_large_pulls == 1 and p.stats.failed_pulls == 1
    assert len(p.pull()) == 1
    p.pull()
    assert fake.asked[1:] == [1, 1], "one message at a time for a while"
    p.one_at_a_time_until = 0.0  # that while is over
    assert p.max_messages() == pubsub.PULL_TARGET_BYTES // (pubsub.FIRST_SIZE_GUESS // 4)


def test_other_pull_failures_are_warnings_not_counted_as_too_large(caplog):
    p, _ = puller([google_exceptions.ServiceUnavailable("emulator down"), [10]])
    assert p.pull() == []
    assert p.stats.failed_pulls == 1 and p.stats.too_large_pulls == 0
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert len(p.pull()) == 1


def test_backlog_age_is_the_oldest_pulled_unacked_publish_time_and_survives_a_nack():
    p, fake = puller([[10], [10], [10]])
    assert p.lease.backlog_age(now=1_000_100.0) == 0.0 and p.stats.answered == 0
    p.pull()
    fake.published_at = 1_000_050.0
    p.pull()
    assert p.lease.backlog_age(now=1_000_100.0) == 100.0, "the oldest held message, not the newest"
    p.lease.nack()  # handed back unacked: still the backlog's head
    assert p.lease.backlog_age(now=1_000_120.0) == 120.0
    p.pull()
    p.lease.release()  # acked
    assert p.lease.backlog_age(now=1_000_120.0) == 0.0
    assert p.stats.answered == 3
