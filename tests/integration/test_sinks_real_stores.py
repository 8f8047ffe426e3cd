"""Forwarding to the real stores, started here: VictoriaMetrics and Prometheus 2.42 (remote-write
receiver), read back through their HTTP APIs and compared sample for sample; plus an outage, a
sink that is down, an out-of-order 4xx, a 2.0 sender into our own receiver, and a capture server
for headers and auth."""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import PROJECT
from tests.sink_helpers import BASE_MS, Capture, forwarding, sink, vm_export, wait_for
from tools import services
from tools.archive import read_archive
from tools.pubsub import Subscription, publish_requests
from transforms.core.protocol import STALE_NAN, STALE_NAN_BITS, Protocol, float_bits, is_stale_marker
from transforms.core.sink import config
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1
from transforms.core.wire.proto import remote_v2_pb2
from transforms.io.pubsub import subscriber_client

ROOT = Path(__file__).resolve().parents[2]


def sent_series(requests_: list) -> dict[tuple, list[tuple[int, float]]]:
    out: dict[tuple, list[tuple[int, float]]] = {}
    for request in requests_:
        for s in request.timeseries:
            key = tuple(sorted((lab.name, lab.value) for lab in s.labels))
            out.setdefault(key, []).extend((x.timestamp, x.value) for x in s.samples)
    return out


def prometheus_raw(url: str, selector: str) -> dict[tuple, list[tuple[int, float]]]:
    """Prometheus' raw samples through a range-vector query (stale markers are hidden by queries)."""
    response = requests.get(f"{url}/api/v1/query", params={"query": f"{selector}[1h]", "time": time.time()},
                            timeout=30).json()
    assert response["status"] == "success", response
    return {tuple(sorted(r["metric"].items())): [(round(float(t) * 1000), float(v)) for t, v in r["values"]]
            for r in response["data"]["result"]}


def same_value(a: float, b: float | None) -> bool:
    return b is not None and (a == b or (math.isnan(a) and math.isnan(b)))


def workload(tag: str, requests_count: int = 30, per: int = 40) -> list:
    """Series with ordinary values, +Inf/-Inf, and one series ending in a stale marker."""
    out = []
    for r in range(requests_count):
        series = [Series({"__name__": f"{tag}_metric", "i": str(i), "job": "sinktest"},
                         [(BASE_MS + r * 1000, float(r * per + i) / 3)]) for i in range(per)]
        series.append(Series({"__name__": f"{tag}_inf", "job": "sinktest"},
                             [(BASE_MS + r * 1000, math.inf if r % 2 else -math.inf)]))
        out.append(build_v1(series))
    out.append(build_v1([Series({"__name__": f"{tag}_stale", "job": "sinktest"},
                                [(BASE_MS + requests_count * 1000, 7.0),
                                 (BASE_MS + (requests_count + 1) * 1000, STALE_NAN)])]))
    return out


@pytest.fixture(scope="module")
def victoria(log_dir) -> Iterator[str]:
    service, url = services.start_victoria_metrics(log_dir)
    yield url
    service.stop()


@pytest.fixture(scope="module")
def prometheus_receiver(log_dir) -> Iterator[str]:
    service, url = services.start_prometheus(log_dir, "global: {}\n", receiver=True, name="prom-receiver")
    yield url
    service.stop()


def test_victoria_metrics_and_prometheus_hold_every_sample_exactly(topic_and_subscription, victoria,
                                                                   prometheus_receiver, tmp_path):
    topic, _ = topic_and_subscription
    sent = workload("exact")
    expected = sent_series(sent)
    total = sum(len(v) for v in expected.values())
    sinks = [sink(f"{victoria}/api/v1/write"),
             sink(f"{prometheus_receiver}/api/v1/write", max_samples_per_request=300)]
    with forwarding(topic, sinks, tmp_path / "dead") as loops:
        publish_requests(topic, [(r, "default") for r in sent])
        wait_for(lambda: all(loop.forwarder.stats.snapshot()["samples_sent"] == total for loop in loops), 60,
                 "both sinks answered 2xx for every sample")
    assert all(loop.forwarder.stats.snapshot()["samples_dead_lettered"] == 0 for loop in loops)

    def vm_samples() -> int:
        requests.get(f"{victoria}/internal/force_flush", timeout=30)
        return sum(len(v) for v in vm_export(victoria, '{job="sinktest",__name__=~"exact_.*"}').values())
    wait_for(lambda: vm_samples() == total, 30, "VictoriaMetrics shows every sample")
    in_vm = vm_export(victoria, '{job="sinktest",__name__=~"exact_.*"}')
    in_prom = prometheus_raw(prometheus_receiver, '{job="sinktest",__name__=~"exact_.*"}')
    assert set(in_vm) == set(expected) and set(in_prom) == set(expected)
    for key, samples in expected.items():
        samples = sorted(samples)
        assert [t for t, _ in in_vm[key]] == [t for t, _ in samples], key
        for (_, value), (_, got) in zip(samples, in_vm[key], strict=True):
            if is_stale_marker(value):
                assert got is None, "VictoriaMetrics exports a stale marker as null"
            else:
                # VictoriaMetrics keeps 12 significant decimal digits (its documented storage precision)
                assert got is not None and (same_value(value, got) or math.isclose(value, got, rel_tol=1e-11)), (
                    key, value, got)
        live = [(t, v) for t, v in samples if not is_stale_marker(v)]
        assert len(in_prom[key]) == len(live) and all(
            t1 == t2 and same_value(v1, v2) for (t1, v1), (t2, v2) in zip(live, in_prom[key], strict=True)), key

    # The stale marker arrived as a stale marker: Prometheus ends the series at once instead of
    # returning its last value for the 5-minute lookback.
    marker_s = (BASE_MS + 31_000) / 1000
    def instant(query: str, at: float) -> list:
        return requests.get(f"{prometheus_receiver}/api/v1/query", params={"query": query, "time": at},
                            timeout=30).json()["data"]["result"]
    assert instant("exact_stale", marker_s - 0.5) != []
    assert instant("exact_stale", marker_s + 5) == []
    assert instant('exact_metric{i="0"}', marker_s + 5) != [], "no marker: still visible within the lookback"


def test_a_sink_that_is_down_waits_and_the_archive_and_other_sink_do_not(topic_and_subscription, victoria, log_dir,
                                                                         tmp_path):
    """Fan-out through the real command: VictoriaMetrics up, Prometheus down until later."""
    topic, subscription = topic_and_subscription
    prometheus_port = services.free_port()
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    archive = tmp_path / "archive"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pipeline", "--runner=DirectRunner", f"--input_subscription={subscription.path}",
               f"--archive_path={archive}", "--window_size=2", f"--remote_write_url={victoria}/api/v1/write",
               f"--remote_write_url={prometheus_url}/api/v1/write", "--metrics_port=0"]
    log = (tmp_path / "pipeline.log").open("w")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    prometheus = None
    try:
        names = [s.subscription_for(subscription.path) for s in config.from_flags(
            [f"{victoria}/api/v1/write", f"{prometheus_url}/api/v1/write"])]

        def subscriptions_exist() -> bool:
            with subscriber_client() as client:
                listed = {s.name for s in client.list_subscriptions(request={"project": f"projects/{PROJECT}"})}
            return set(names) <= listed
        wait_for(subscriptions_exist, 60, "the launcher created one subscription per sink")
        sent = workload("fanout", requests_count=20, per=25)
        expected = sent_series(sent)
        total = sum(len(v) for v in expected.values())
        publish_requests(topic, [(r, "default") for r in sent])

        def vm_count() -> int:
            requests.get(f"{victoria}/internal/force_flush", timeout=30)
            return sum(len(v) for v in vm_export(victoria, '{__name__=~"fanout_.*"}').values())
        wait_for(lambda: vm_count() == total, 60, "VictoriaMetrics has everything while Prometheus is down")
        wait_for(lambda: sum(len(v) for v in read_archive(str(archive)).values()) == total, 90,
                 "the archive has everything while Prometheus is down")
        wait_for(lambda: "refused" in (tmp_path / "pipeline.log").read_text().lower(), 60,
                 "the down sink being retried")
        prometheus, _ = services.start_prometheus(log_dir, "global: {}\n", receiver=True, port=prometheus_port,
                                                  name="prom-late")
        wait_for(lambda: sum(len(v) for v in prometheus_raw(prometheus_url, '{__name__=~"fanout_.*"}').values())
                 == total - 1, 90, "Prometheus got everything once it came up")  # minus the hidden stale marker
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(90) == 0, (tmp_path / "pipeline.log").read_text()[-3000:]
        if prometheus:
            prometheus.stop()
    text = (tmp_path / "pipeline.log").read_text()
    assert "connection refused" in text.lower() or "refused" in text, "the down sink was retried, not skipped"


def test_victoria_metrics_down_for_20_seconds_mid_stream_loses_nothing(topic_and_subscription, log_dir, tmp_path):
    port = services.free_port()
    data = str(tmp_path / "vm-data")
    vm, url = services.start_victoria_metrics(log_dir, name="vm-outage", port=port, data_dir=data)
    published: list = []
    try:
        topic, _ = topic_and_subscription
        with forwarding(topic, [sink(f"{url}/api/v1/write", shards=2)], tmp_path / "dead") as (loop,):
            stop_publishing = threading.Event()

            def publish() -> None:
                r = 0
                while not stop_publishing.is_set():
                    request = build_v1([Series({"__name__": "outage_metric", "i": str(i)},
                                               [(BASE_MS + r * 100, float(r))]) for i in range(20)])
                    publish_requests(topic, [(request, "default")])
                    published.append(request)
                    r += 1
                    time.sleep(0.1)
            publisher = threading.Thread(target=publish)
            publisher.start()
            wait_for(lambda: loop.forwarder.stats.snapshot()["samples_sent"] > 0, 60, "delivery under way")
            vm.stop()
            outage_ends = time.monotonic() + 20  # the outage itself lasts 20 s, by design
            wait_for(lambda: loop.forwarder.stats.snapshot()["samples_retried"] > 0, 60, "retries during the outage")
            time.sleep(max(0.0, outage_ends - time.monotonic()))
            vm, _ = services.start_victoria_metrics(log_dir, name="vm-outage", port=port, data_dir=data)
            sent_at_restart = loop.forwarder.stats.snapshot()["samples_sent"]
            wait_for(lambda: loop.forwarder.stats.snapshot()["samples_sent"] > sent_at_restart, 60,
                     "delivery resumed after the restart")
            stop_publishing.set()
            publisher.join()
            total = 20 * len(published)
            wait_for(lambda: loop.forwarder.stats.snapshot()["samples_sent"] >= total, 90, "everything delivered")
            stats = loop.forwarder.stats.snapshot()
        assert stats["samples_retried"] > 0 and stats["samples_dead_lettered"] == 0
        def vm_count() -> int:
            requests.get(f"{url}/internal/force_flush", timeout=30)
            return sum(len(v) for v in vm_export(url, '{__name__="outage_metric"}').values())
        wait_for(lambda: vm_count() >= total, 30, "VictoriaMetrics shows every sample")
        got = vm_export(url, '{__name__="outage_metric"}')
        # At-least-once: a request VictoriaMetrics stored but could not answer when it was killed is
        # sent again, and it keeps both copies. Every sample must be there; a repeat may only be exact.
        assert {key: sorted(set(v)) for key, v in got.items()} == \
            {key: sorted(v) for key, v in sent_series(published).items()}
        repeats = sum(len(v) - len(set(v)) for v in got.values())
        in_flight = 2 * config.QueueConfig().max_samples_per_request  # one request per shard at the kill
        assert repeats <= in_flight, f"{repeats} repeated samples: more than the requests in flight at the kill"
    finally:
        vm.stop()


def test_out_of_order_sample_into_prometheus_is_dead_lettered_and_the_rest_delivered(topic_and_subscription,
                                                                                     prometheus_receiver, tmp_path):
    topic, _ = topic_and_subscription
    first = build_v1([Series({"__name__": "ooo_metric", "i": "bad"}, [(BASE_MS + 60_000, 1.0)])])
    second = build_v1([Series({"__name__": "ooo_metric", "i": str(i)}, [(BASE_MS + 60_000, float(i))])
                       for i in range(50)] + [Series({"__name__": "ooo_metric", "i": "bad"}, [(BASE_MS, 2.0)])])
    dead = tmp_path / "dead"
    with forwarding(topic, [sink(f"{prometheus_receiver}/api/v1/write", shards=1)], dead) as (loop,):
        publish_requests(topic, [(first, "default")])
        wait_for(lambda: loop.forwarder.stats.snapshot()["samples_sent"] == 1, 30, "the first sample")
        publish_requests(topic, [(second, "default")])
        wait_for(lambda: loop.forwarder.stats.snapshot()["samples_dead_lettered"] == 1, 60, "the dead letter")
        stats = loop.forwarder.stats.snapshot()
    assert stats["samples_sent"] == 51
    got = prometheus_raw(prometheus_receiver, "ooo_metric")
    assert len(got) == 51 and got[(("__name__", "ooo_metric"), ("i", "bad"))] == [(BASE_MS + 60_000, 1.0)]
    (path,) = list(dead.rglob("*.ndjson"))
    assert path.parent.parent.name.startswith("sink=")
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["status"] == 400 and "out of order" in record["answer"]
    body = codec.decode(base64.b64decode(record["data_base64"]), Protocol.V1, 1 << 20).message
    assert [(s.timestamp, s.value) for ts in body.timeseries for s in ts.samples] == [(BASE_MS, 2.0)]


def test_a_2_0_sender_into_our_own_receiver_delivers_exactly(topic_and_subscription, pubsub_emulator, log_dir,
                                                             tmp_path):
    topic, _ = topic_and_subscription
    receiver_topic = topic + "-v2in"
    receiver_subscription = receiver_topic.replace("/topics/", "/subscriptions/")
    services.create_topic_and_subscription(pubsub_emulator, receiver_topic, receiver_subscription)
    receiver, receiver_url = services.start_receiver(log_dir, pubsub_emulator, receiver_topic, name="receiver-v2")
    metadata = build_v1([], [Series({"__name__": "v2_requests"}, metric_type="counter", help="Requests served.")])
    data = build_v1([Series({"__name__": "v2_requests_total", "code": "200"}, [(BASE_MS, 1.0), (BASE_MS + 1, 2.0)]),
                     Series({"__name__": "v2_gone"}, [(BASE_MS, 3.0), (BASE_MS + 1, STALE_NAN)])])
    try:
        with forwarding(topic, [sink(f"{receiver_url}/api/v1/write", protocol="2.0", tenant="team-v2")],
                        tmp_path / "dead") as (loop,):
            publish_requests(topic, [(metadata, "default")])
            wait_for(lambda: bool(loop.forwarder.builder.families.get("default")), 30, "metadata remembered")
            publish_requests(topic, [(data, "default")])
            messages = []
            with Subscription(receiver_subscription) as received:
                deadline = time.monotonic() + 60
                while sum(int(m.attributes["samples"]) for m in messages) < 4 and time.monotonic() < deadline:
                    messages += received.drain(quiet=0.5)
    finally:
        receiver.stop()
    got = {}
    for message in messages:  # one request per shard the series landed on
        assert message.attributes["protocol"] == "2.0" and message.attributes["tenant"] == "team-v2"
        request = message.decode().message
        assert isinstance(request, remote_v2_pb2.Request)
        got.update(decode_v2(request))
    assert got == {
        (("__name__", "v2_requests_total"), ("code", "200")): (
            [(BASE_MS, float_bits(1.0)), (BASE_MS + 1, float_bits(2.0))], 1, "Requests served."),
        (("__name__", "v2_gone"),): ([(BASE_MS, float_bits(3.0)), (BASE_MS + 1, STALE_NAN_BITS)], 0, ""),
    }


def decode_v2(request: remote_v2_pb2.Request) -> dict:
    symbols = request.symbols
    got = {}
    for s in request.timeseries:
        refs = s.labels_refs
        labels = tuple((symbols[refs[i]], symbols[refs[i + 1]]) for i in range(0, len(refs), 2))
        got[labels] = ([(x.timestamp, float_bits(x.value)) for x in s.samples], s.metadata.type,
                       symbols[s.metadata.help_ref])
    return got


def test_headers_auth_tenant_and_retry_after_as_a_peer_sees_them(topic_and_subscription, capture, tmp_path):
    topic, _ = topic_and_subscription
    password = tmp_path / "password"
    password.write_text("pa55\n")
    token = tmp_path / "token"
    token.write_text("tok3n\n")
    sinks = config.from_document(json.dumps({"remote_write": [
        {"url": capture, "name": "basic", "headers": {"X-Team": "infra"},
         "basic_auth": {"username": "alice", "password_file": str(password)}},
        {"url": capture + "?v=2", "name": "bearer", "protocol": "2.0", "bearer_token_file": str(token),
         "tenant_header": "drop"}]}))
    Capture.answers = [(429, {"Retry-After": "1"})]
    request = build_v1([Series({"__name__": "cap", "i": "1"}, [(BASE_MS, STALE_NAN)])])
    with forwarding(topic, sinks, tmp_path / "dead") as loops:
        publish_requests(topic, [(request, "team-a")])
        wait_for(lambda: sum(loop.forwarder.stats.snapshot()["samples_sent"] for loop in loops) == 2, 30,
                 "both sinks delivered")
    by_sink: dict[str, list] = {}
    for at, headers, body in Capture.seen:
        by_sink.setdefault("bearer" if "Bearer" in headers.get("Authorization", "") else "basic", []).append(
            (at, headers, body))
    retried = [entries for entries in by_sink.values() if len(entries) == 2]
    assert len(retried) == 1 and retried[0][1][0] - retried[0][0][0] >= 1.0, "Retry-After: 1 was honoured"
    _, basic, body = by_sink["basic"][-1]
    assert basic["Authorization"] == "Basic " + base64.b64encode(b"alice:pa55").decode()
    assert (basic["X-Team"], basic["X-Scope-OrgID"]) == ("infra", "team-a")
    assert (basic["Content-Encoding"], basic["Content-Type"]) == ("snappy", "application/x-protobuf")
    assert basic["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    assert basic["User-Agent"].startswith("prometheus-remote-write-pipeline/")
    decoded = codec.decode(body, Protocol.V1, 1 << 20).message
    assert float_bits(decoded.timeseries[0].samples[0].value) == STALE_NAN_BITS
    _, bearer, body = by_sink["bearer"][-1]
    assert bearer["Authorization"] == "Bearer tok3n" and "X-Scope-OrgID" not in bearer
    assert bearer["Content-Type"] == "application/x-protobuf;proto=io.prometheus.write.v2.Request"
    assert bearer["X-Prometheus-Remote-Write-Version"] == "2.0.0"
    decoded = codec.decode(body, Protocol.V2, 1 << 20).message
    assert float_bits(decoded.timeseries[0].samples[0].value) == STALE_NAN_BITS


def test_the_streaming_graphs_sink_branch_delivers_in_order_through_beam(capture, tmp_path):
    """ForwardToSink (the Dataflow branch: shard, GroupIntoBatches per shard, send) on Beam's local runner."""
    import apache_beam as beam
    from apache_beam.io.gcp.pubsub import PubsubMessage

    from transforms.beam import ForwardToSink

    requests_ = [build_v1([Series({"__name__": "beam_metric", "i": str(i)}, [(BASE_MS + 1000 * (9 - r), float(r))])
                           for i in range(30)]) for r in range(10)]  # newest first
    bad = (b"\x00garbage", {"protocol": "1.0", "tenant": "t"})
    messages = [(codec.encode(r), codec.message_attributes(Protocol.V1, "t", "now", codec.count(r)))
                for r in requests_] + [bad]
    target = sink(capture, shards=3, max_samples_per_request=500)
    with beam.Pipeline(runner="DirectRunner") as p:
        _ = (p | beam.Create(messages) | beam.Map(lambda m: PubsubMessage(m[0], m[1]))
             | ForwardToSink(target, str(tmp_path / "dead")))
    stamps: dict[str, list[int]] = {}
    for _, headers, body in Capture.seen:
        assert headers["X-Scope-OrgID"] == "t"
        for s in codec.decode(body, Protocol.V1, 1 << 20).message.timeseries:
            stamps.setdefault(s.labels[1].value, []).extend(x.timestamp for x in s.samples)
    assert len(stamps) == 30 and all(v == sorted(v) and len(v) == 10 for v in stamps.values())
    (dead,) = list((tmp_path / "dead").rglob("*.ndjson"))
    assert base64.b64decode(json.loads(dead.read_text())["data_base64"]) == bad[0]
