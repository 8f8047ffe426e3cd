"""Order-safe delivery into a real Prometheus 2.42 (no out-of-order window): redeliveries are counted as
already delivered, real losses are dead letters with their reason, the record survives a restart, and
`pipeline.replay` restores dead letters into a Prometheus with an out-of-order window."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from pipeline.replay import main as replay
from tests.integration.test_sinks_real_stores import prometheus_raw
from tests.sink_helpers import BASE_MS, forwarding, sink, wait_for
from tools import services
from tools.pubsub import publish_requests
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1
from transforms.io.deadletters import read_dead_letters, write_dead_letters
from transforms.io.delivered_state import DeliveredState
from transforms.io.http_sink import HttpService
from transforms.io.sink_driver import Forwarder

SERIES = 100
PER = 5  # samples per series per request: 500-sample requests, as Prometheus sends them


def scrape(tag: str, step: int, series: int = SERIES):
    """A request of `series` series, PER samples each, 1 s apart, at step `step` of the series' timeline."""
    return build_v1([Series({"__name__": f"{tag}_metric", "i": str(i), "job": "ordertest"},
                            [(BASE_MS + (step * PER + k) * 1000, float(step * PER + k + i)) for k in range(PER)])
                     for i in range(series)])


def message(request) -> tuple[bytes, dict[str, str]]:
    return codec.encode(request), codec.message_attributes(codec.Protocol.V1, "default", "now", codec.count(request))


def held(url: str, tag: str) -> int:
    return sum(len(v) for v in prometheus_raw(url, f"{tag}_metric").values())


@pytest.fixture(scope="module")
def strict_prometheus(log_dir) -> Iterator[str]:
    service, url = services.start_prometheus(log_dir, "global: {}\n", receiver=True, name="prom-strict")
    yield url
    service.stop()


@pytest.fixture(scope="module")
def tolerant_prometheus(log_dir) -> Iterator[str]:
    config = "global: {}\nstorage:\n  tsdb:\n    out_of_order_time_window: 1h\n"
    service, url = services.start_prometheus(log_dir, config, receiver=True, name="prom-ooo")
    yield url
    service.stop()


def test_a_redelivered_older_message_after_a_newer_one_is_already_delivered(topic_and_subscription,
                                                                             strict_prometheus, tmp_path):
    topic, _ = topic_and_subscription
    dead = tmp_path / "dead"
    with forwarding(topic, [sink(f"{strict_prometheus}/api/v1/write", shards=2, order="strict")], dead) as (loop,):
        stats = loop.forwarder.stats
        publish_requests(topic, [(scrape("redeliver", 0), "default")])
        wait_for(lambda: stats.snapshot()["samples_sent"] == 500, 30, "the older message")
        publish_requests(topic, [(scrape("redeliver", 1), "default")])
        wait_for(lambda: stats.snapshot()["samples_sent"] == 1000, 30, "the newer message")
        requests_before = stats.snapshot()["requests"]
        publish_requests(topic, [(scrape("redeliver", 0), "default")])  # the older one again, as a redelivery
        wait_for(lambda: stats.snapshot()["samples_already_delivered"] == 500, 30, "the redelivery")
        final = stats.snapshot()
    assert final["samples_dead_lettered"] == 0 and final["samples_failed"] == 0
    assert final["requests"] == requests_before  # it never reached the sink
    assert not list(dead.rglob("*.ndjson"))
    got = prometheus_raw(strict_prometheus, "redeliver_metric")
    assert len(got) == SERIES and all(len(samples) == 2 * PER for samples in got.values())
    assert (dead / "_sink_state").is_dir()  # the loop saved what was delivered when it stopped


def test_a_sink_left_at_order_any_keeps_no_record_and_no_files(topic_and_subscription, strict_prometheus, tmp_path):
    topic, _ = topic_and_subscription
    dead = tmp_path / "dead"
    with forwarding(topic, [sink(f"{strict_prometheus}/api/v1/write", shards=2)], dead) as (loop,):
        publish_requests(topic, [(scrape("anyorder", 0), "default")])
        wait_for(lambda: loop.forwarder.stats.snapshot()["samples_sent"] == 500, 30, "the message")
        assert loop.forwarder.order is None and loop.delivered_state is None
    assert not (dead / "_sink_state").exists()


def test_a_never_delivered_older_sample_is_dead_lettered_and_replays_into_an_out_of_order_window(
        strict_prometheus, tolerant_prometheus, topic_and_subscription, tmp_path):
    strict = Forwarder(sink(f"{strict_prometheus}/api/v1/write", shards=2, order="strict"),
                       service=HttpService(sink(f"{strict_prometheus}/api/v1/write")))
    newer = scrape("late", 1)
    assert strict.forward([message(newer)]) == []
    # Half-second samples of three series, between those delivered, never sent before them (a parallel bundle,
    # a message held back): a real loss.
    late = build_v1([Series({"__name__": "late_metric", "i": str(i), "job": "ordertest"},
                            [(BASE_MS + (PER + k) * 1000 + 500, float(k)) for k in range(PER - 1)])
                     for i in range(3)])
    records = strict.forward([message(late)])
    strict.close()
    stats = strict.stats.snapshot()
    assert (stats["samples_dead_lettered"], stats["samples_already_delivered"]) == (3 * (PER - 1), 0)
    assert stats["requests"] < 1 + 2 * 3 * 2  # bisection over 3 series, never one request per sample
    reasons = [json.loads(r)["error"] for r in records]
    assert reasons and all("never delivered" in r and "out of order" in r for r in reasons)
    assert held(strict_prometheus, "late") == SERIES * PER

    # The same data into a Prometheus with out_of_order_time_window: the newer part first, then the replay.
    topic, _ = topic_and_subscription
    dead = tmp_path / "dead"
    write_dead_letters(str(dead), records, sink="strict")
    with forwarding(topic, [sink(f"{tolerant_prometheus}/api/v1/write", shards=2)], tmp_path / "dead2") as (loop,):
        publish_requests(topic, [(newer, "default")])
        wait_for(lambda: loop.forwarder.stats.snapshot()["samples_sent"] == SERIES * PER, 30, "the newer samples")
        pattern = str(dead / "sink=strict" / "date=*" / "*.ndjson")
        assert len(read_dead_letters(pattern)) == len(records)
        assert replay(["--dead_letters", pattern, "--topic", topic]) == 0
        wait_for(lambda: loop.forwarder.stats.snapshot()["samples_sent"] == SERIES * PER + 3 * (PER - 1), 30,
                 "the replay")
        assert loop.forwarder.stats.snapshot()["samples_dead_lettered"] == 0
    got = prometheus_raw(tolerant_prometheus, "late_metric")
    for i in range(3):
        key = (("__name__", "late_metric"), ("i", str(i)), ("job", "ordertest"))
        assert [t for t, _ in got[key]] == sorted([BASE_MS + (PER + k) * 1000 for k in range(PER)]
                                                  + [BASE_MS + (PER + k) * 1000 + 500 for k in range(PER - 1)])


def test_what_was_delivered_survives_a_restart_of_the_forwarder(strict_prometheus, tmp_path):
    url = f"{strict_prometheus}/api/v1/write"
    state = DeliveredState(str(tmp_path / "_sink_state" / "prom.delivered"))
    first = Forwarder(sink(url, shards=2, order="strict"), service=HttpService(sink(url)), delivered=state.load())
    assert first.forward([message(scrape("restart", 0)), message(scrape("restart", 1))]) == []
    assert first.order is not None
    state.save(first.order.delivered)
    first.close()

    again = Forwarder(sink(url, shards=2, order="strict"), service=HttpService(sink(url)),
                      delivered=DeliveredState(state.path).load())
    assert again.forward([message(scrape("restart", 0)), message(scrape("restart", 2))]) == []
    stats = again.stats.snapshot()
    again.close()
    assert (stats["samples_already_delivered"], stats["samples_sent"], stats["samples_dead_lettered"]) == (500, 500, 0)
    assert held(strict_prometheus, "restart") == 3 * SERIES * PER
