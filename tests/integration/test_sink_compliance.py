"""Sender compliance of the sink, as a peer sees it on the wire (the prometheus/compliance sender
cases we failed): empty label values dropped, 2.0 -> 1.0 fallback on 415 and on a 2xx without
*-Written headers (a real VictoriaMetrics 1.79, which speaks only 1.0), start timestamps kept."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sink_helpers import BASE_MS, Capture, forwarding, sink, vm_export, wait_for
from tools import services
from tools.pubsub import publish_requests
from transforms.core.protocol import Protocol
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1, build_v2


@pytest.fixture(scope="module")
def victoria_1x(log_dir) -> Iterator[str]:
    service, url = services.start_victoria_metrics(log_dir, name="victoria-1x")
    yield url
    service.stop()


def wire(entry: tuple[float, dict[str, str], bytes]):
    _, headers, body = entry
    protocol = codec.protocol_for_content_type(headers["Content-Type"])
    return protocol, codec.decode(body, protocol, 1 << 24).message


def labels_of(protocol: Protocol, request) -> list[list[tuple[str, str]]]:
    if protocol is Protocol.V1:
        return [[(lab.name, lab.value) for lab in s.labels] for s in request.timeseries]
    symbols = request.symbols
    return [[(symbols[s.labels_refs[i]], symbols[s.labels_refs[i + 1]]) for i in range(0, len(s.labels_refs), 2)]
            for s in request.timeseries]


def test_a_2_0_sink_answering_415_gets_1_0_from_then_on_without_empty_labels(topic_and_subscription, capture,
                                                                             tmp_path):
    topic, _ = topic_and_subscription
    Capture.answers = [(415, {})]
    first = build_v1([Series({"__name__": "fallback", "empty": "", "job": "j"}, [(BASE_MS, 1.0)])])
    second = build_v2([Series({"__name__": "fallback", "empty": "", "job": "j"}, [(BASE_MS + 1000, 2.0)])])
    with forwarding(topic, [sink(capture, protocol="2.0", shards=1)], tmp_path / "dead") as (loop,):
        publish_requests(topic, [(first, "default")])
        wait_for(lambda: loop.forwarder.stats.snapshot()["samples_sent"] == 1, 30, "first sample delivered")
        publish_requests(topic, [(second, "default")], protocol=Protocol.V2)
        wait_for(lambda: loop.forwarder.stats.snapshot()["samples_sent"] == 2, 30, "second sample delivered")
    # the 2.0 input's metadata now goes in a 1.0 metadata-only request of its own, as Prometheus sends it
    data = [wire(entry) for entry in Capture.seen if wire(entry)[1].timeseries]
    assert [protocol for protocol, _ in data] == [Protocol.V2, Protocol.V1, Protocol.V1], \
        "one 2.0 try answered 415, then 1.0 remembered"
    assert all(wire(entry)[0] is Protocol.V1 for entry in Capture.seen[1:])
    assert Capture.seen[1][1]["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    for protocol, request in data:
        assert labels_of(protocol, request) == [[("__name__", "fallback"), ("job", "j")]]
    assert loop.forwarder.stats.snapshot()["protocol_fallbacks"] == 1
    assert not list((tmp_path / "dead").rglob("*.ndjson"))


def test_2_0_to_2_0_forwarding_keeps_start_timestamps_on_the_wire(topic_and_subscription, capture, tmp_path):
    topic, _ = topic_and_subscription
    request = build_v2([Series({"__name__": "started_total"}, [(BASE_MS, 1.0), (BASE_MS + 1000, 2.0)],
                               metric_type="counter"),
                        Series({"__name__": "created_total"}, [(BASE_MS, 3.0)], metric_type="counter")])
    request.timeseries[0].samples[0].start_timestamp = BASE_MS - 60_000
    request.timeseries[0].samples[1].start_timestamp = BASE_MS - 60_000
    request.timeseries[1].created_timestamp = BASE_MS - 5_000  # the field before rc.4
    with forwarding(topic, [sink(capture, protocol="2.0", shards=1)], tmp_path / "dead") as (loop,):
        publish_requests(topic, [(request, "default")], protocol=Protocol.V2)
        wait_for(lambda: loop.forwarder.stats.snapshot()["samples_sent"] == 3, 30, "samples delivered")
    (entry,) = Capture.seen
    protocol, sent = wire(entry)
    assert protocol is Protocol.V2
    got = {sent.symbols[s.labels_refs[1]]: [(x.timestamp, x.start_timestamp) for x in s.samples]
           for s in sent.timeseries}
    assert got == {"started_total": [(BASE_MS, BASE_MS - 60_000), (BASE_MS + 1000, BASE_MS - 60_000)],
                   "created_total": [(BASE_MS, BASE_MS - 5_000)]}
    assert loop.forwarder.protocol is Protocol.V2


def test_a_2_0_sink_on_victoria_metrics_1_79_falls_back_and_delivers_every_sample(topic_and_subscription,
                                                                                  victoria_1x, tmp_path):
    """VictoriaMetrics 1.79 reads any body as 1.0: a 2.0 request decodes as empty and is answered 204
    without *-Written headers. Read as a 1.x receiver, the same data goes again as 1.0."""
    topic, _ = topic_and_subscription
    requests_ = [build_v1([Series({"__name__": "vm_fallback", "i": str(i), "blank": ""}, [(BASE_MS + r * 1000, r + i)])
                           for i in range(20)]) for r in range(5)]
    with forwarding(topic, [sink(f"{victoria_1x}/api/v1/write", protocol="2.0", shards=2)],
                    tmp_path / "dead") as (loop,):
        publish_requests(topic, [(r, "default") for r in requests_])
        wait_for(lambda: loop.forwarder.stats.snapshot()["samples_sent"] == 100, 60, "every sample sent")
        wait_for(lambda: sum(len(v) for v in vm_export(victoria_1x, "vm_fallback").values()) == 100, 60,
                 "every sample in VictoriaMetrics")
    stored = vm_export(victoria_1x, "vm_fallback")
    assert sorted(stored) == sorted((("__name__", "vm_fallback"), ("i", str(i))) for i in range(20))
    assert all([t for t, _ in v] == [BASE_MS + r * 1000 for r in range(5)] for v in stored.values())
    stats = loop.forwarder.stats.snapshot()
    assert stats["protocol_fallbacks"] == 1 and loop.forwarder.protocol is Protocol.V1
