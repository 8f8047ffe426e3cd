"""The receiver's write path without HTTP: receiver.ingest.Ingest with an in-memory publisher."""

from __future__ import annotations

import pytest

from receiver.config import ReceiverConfig
from receiver.ingest import Ingest
from receiver.metrics import ReceiverMetrics
from receiver.publisher import Unavailable
from tests.fakes import MemoryPublisher
from transforms.core.errors import InvalidPayload, PayloadTooLarge, UnsupportedMediaType
from transforms.core.protocol import CONTENT_TYPE_V2, Protocol
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1, build_v2

TOPIC = "projects/test-project/topics/remote-write"


def make(**overrides) -> tuple[Ingest, MemoryPublisher]:
    publisher = MemoryPublisher()
    return Ingest(ReceiverConfig(topic=TOPIC, **overrides), publisher, ReceiverMetrics()), publisher


def series(n: int, samples: int = 1) -> list[Series]:
    return [Series({"__name__": "m", "i": str(i)}, [(1000 + t, float(t)) for t in range(samples)]) for i in range(n)]


def test_accept_publishes_the_body_as_received_and_returns_its_counts():
    ingest, publisher = make()
    body = codec.encode(build_v2(series(3, 2)))
    counts = ingest.accept(body, Protocol.V2, "team-a")
    assert (counts.series, counts.samples) == (3, 6)
    [(data, attributes)] = publisher.messages
    assert data == body
    assert (attributes["protocol"], attributes["tenant"], attributes["samples"]) == ("2.0", "team-a", "6")


def test_accept_splits_a_body_over_the_message_limit_into_parts_that_add_up():
    ingest, publisher = make(max_message_bytes=400)
    counts = ingest.accept(codec.encode(build_v1(series(100, 10))), Protocol.V1, "default")
    assert counts.samples == 1000 and len(publisher.messages) > 1
    assert sum(codec.decode(d, Protocol.V1, 1 << 20).counts.samples for d, _ in publisher.messages) == 1000
    assert {a["parts"] for _, a in publisher.messages} == {str(len(publisher.messages))}


def test_invalid_data_is_refused_and_publishes_nothing():
    ingest, publisher = make()
    with pytest.raises(InvalidPayload):
        ingest.accept(b"\xff\xff\xff\xff\xffjunk", Protocol.V1, "default")
    assert publisher.messages == []


def test_negotiate_reads_the_protocol_and_refuses_before_the_body():
    ingest, _ = make(max_body_bytes=100)
    assert ingest.negotiate(CONTENT_TYPE_V2, "snappy", 10) is Protocol.V2
    assert ingest.negotiate(None, None, None) is Protocol.V1
    with pytest.raises(UnsupportedMediaType):
        ingest.negotiate("application/json", "snappy", 10)
    with pytest.raises(PayloadTooLarge):
        ingest.negotiate(None, "snappy", 101)


def test_tenant_defaults_and_refuses_path_unsafe_ids():
    assert Ingest.tenant(None) == "default"
    assert Ingest.tenant(" acme ") == "acme"
    with pytest.raises(InvalidPayload, match="X-Scope-OrgID"):
        Ingest.tenant("../etc")


def test_admission_beyond_max_in_flight_is_unavailable():
    ingest, _ = make(max_in_flight=1)
    with ingest.admitted():
        with pytest.raises(Unavailable, match="in-flight"):
            with ingest.admitted():
                pass
    with ingest.admitted():  # the slot was given back
        pass


def test_a_failed_publish_is_unavailable():
    ingest, publisher = make()
    publisher.fail_with = RuntimeError("emulator down")
    with pytest.raises(Unavailable, match="emulator down"):
        ingest.accept(codec.encode(build_v1(series(1))), Protocol.V1, "default")


def test_decompressed_bytes_in_flight_are_bounded_per_worker():
    ingest, publisher = make(max_decompressed_bytes=1000, max_in_flight_bytes=1500)
    body = codec.encode(build_v1(series(5)))
    with ingest.in_flight_bytes.reserve(1450):  # another request is being decoded
        with pytest.raises(Unavailable, match="max-in-flight-bytes"):
            ingest.accept(body, Protocol.V1, "default")
    assert publisher.messages == []
    ingest.accept(body, Protocol.V1, "default")  # once it is done, the same request goes through
    assert ingest.in_flight_bytes.used == 0 and len(publisher.messages) == 1


def test_a_request_over_the_series_limit_is_413_before_parsing():
    ingest, publisher = make(max_series_per_request=4)
    with pytest.raises(PayloadTooLarge, match="more than 4 series.*--max-series-per-request"):
        ingest.accept(codec.encode(build_v1(series(5))), Protocol.V1, "default")
    assert publisher.messages == [] and ingest.in_flight_bytes.used == 0
