"""Messages of the sizes operators send, against the real Pub/Sub emulator and VictoriaMetrics.

Prometheus with max_samples_per_send: 1000 and node_exporter-like labels makes ~44 KiB messages;
the receiver publishes up to 9.5 MB. A default Python subscriber on the emulator cannot take a
pull response over 4 MiB, so these sizes once stalled the local pipeline for good.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from google.cloud import pubsub_v1

from bench.load import SERIES_PER_REQUEST, build_stream
from tests.conftest import PROJECT
from tools import services
from tools.archive import read_archive
from tools.pubsub import publish_raw
from transforms.core.protocol import CONTENT_TYPE_V1, HEADER_VERSION, VERSION_HEADER_V1, Protocol
from transforms.core.sink.config import from_flags
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1
from transforms.io import pubsub

ROOT = Path(__file__).resolve().parents[2]
KIB44_MESSAGES = 1000  # 1 M samples, 44 MB of 44 KiB messages: a backlog, well past any single pull
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def victoria(log_dir) -> Iterator[str]:
    service, url = services.start_victoria_metrics(log_dir, name="vm-large")
    yield url
    service.stop()


def attributes_for(body: bytes) -> dict[str, str]:
    counts = codec.decode(body, Protocol.V1, 1 << 30).counts
    return codec.message_attributes(Protocol.V1, "default", "2026-11-30T00:00:00.000Z", counts)


def publish_bodies(topic: str, bodies: list[bytes]) -> None:
    publisher = pubsub_v1.PublisherClient()
    try:
        futures = [publisher.publish(topic, body, **attributes_for(body)) for body in bodies]
        for future in futures:
            future.result(timeout=120)
    finally:
        publisher.transport.close()


def incompressible_request(target_bytes: int, tag: str, ts: int) -> bytes:
    """One 1.0 request whose snappy body is about target_bytes: series with 2 KiB hex label values."""
    per_series = 2053  # bytes of one series on the wire, compressed or not (random hex does not fold)
    series = [Series({"__name__": f"{tag}_metric", "i": str(i), "blob": os.urandom(1000).hex()}, [(ts, float(i))])
              for i in range(target_bytes // per_series)]
    return codec.encode(build_v1(series))


def start_pipeline(log_dir: Path, name: str, subscription: str, archive: Path, vm: str) -> services.Service:
    return services.Service(name, [sys.executable, "-m", "pipeline", "--runner=DirectRunner",
                                   f"--input_subscription={subscription}", f"--archive_path={archive}",
                                   "--window_size=2", f"--remote_write_url={vm}/api/v1/write", "--metrics_port=0"],
                            log_dir, env={"PYTHONPATH": str(ROOT)}, cwd=ROOT)


def sink_subscription(emulator: str, topic: str, subscription: str, vm: str) -> None:
    """Created before anything is published: a subscription only gets what is published after it exists."""
    sink = from_flags([f"{vm}/api/v1/write"])[0]
    services.create_subscription(emulator, topic, sink.subscription_for(subscription))


def vm_samples(vm: str, match: str) -> dict[tuple, list[tuple[int, float]]]:
    requests.get(f"{vm}/internal/force_flush", timeout=30)
    response = requests.get(f"{vm}/api/v1/export", params={"match[]": match}, timeout=120)
    response.raise_for_status()
    out = {}
    for line in response.text.splitlines():
        row = json.loads(line)
        out[tuple(sorted(row["metric"].items()))] = sorted(zip(row["timestamps"], row["values"], strict=True))
    return out


def sent_samples(bodies: list[bytes]) -> dict[tuple, list[tuple[int, float]]]:
    out: dict[tuple, list[tuple[int, float]]] = {}
    for body in bodies:
        for s in codec.decode(body, Protocol.V1, 1 << 30).message.timeseries:
            key = tuple(sorted((label.name, label.value) for label in s.labels))
            out.setdefault(key, []).extend((x.timestamp, x.value) for x in s.samples)
    return {k: sorted(v) for k, v in out.items()}


def archived_samples(archive: Path) -> dict[tuple, list[tuple[str, float]]]:
    out: dict[tuple, list[tuple[str, float]]] = {}
    for lines in read_archive(str(archive)).values():
        for line in lines:
            key = tuple(sorted({**line["tags"], "__name__": line["name"]}.items()))
            value = next(v["value"] for k, v in line.items() if k in ("gauge", "counter"))
            out.setdefault(key, []).append((line["timestamp"], value))
    return out


def wait_for(check, timeout: float, what: str) -> None:
    services.wait_until(check, timeout, what, interval=1.0)


def test_pulls_over_4_mib_and_a_9_mb_message_come_through(topic_and_subscription, pubsub_emulator):
    """The trap itself, then the fix: the default emulator client fails a pull over 4 MiB; the
    project's client takes 200 x 44 KiB and a single 9.4 MB message."""
    topic, subscription = topic_and_subscription
    trap = f"{subscription.path}-trap"  # its own copy: what the failed pull leased is not in the way
    services.create_subscription(pubsub_emulator, topic, trap)
    bodies = build_stream(0, 200, int(time.time() * 1000), shape="node")
    big = incompressible_request(9_400_000, "big", int(time.time() * 1000))
    publish_bodies(topic, bodies)
    publish_raw(topic, big, attributes_for(big))

    with pubsub_v1.SubscriberClient() as default_client:
        with pytest.raises(Exception, match="larger than max"):
            default_client.pull(request={"subscription": trap, "max_messages": 1000,
                                         "return_immediately": True}, timeout=30)

    client = pubsub.subscriber_client()
    stop = threading.Event()
    lease = pubsub.Lease(client, subscription.path)
    puller = pubsub.Puller(client, subscription.path, lease, stop)
    got: dict[str, bytes] = {}
    deadline = time.monotonic() + 60
    while len(got) < 201 and time.monotonic() < deadline:
        received = puller.pull()
        got.update((r.message.message_id, r.message.data) for r in received)
        pubsub.acknowledge(client, subscription.path, [r.ack_id for r in received])
    client.close()
    assert len(got) == 201
    assert big in got.values()
    assert puller.stats.too_large_pulls == 0
    assert puller.stats.bytes >= len(big) + sum(map(len, bodies))


def test_a_message_the_client_cannot_take_is_logged_counted_and_the_rest_flows(pubsub_emulator, caplog):
    """A response still too large for the client (here: a client limited to 1 MiB, a 2 MB message)
    is an error in the log and a count, and the subscription's other messages keep coming."""
    topic = f"projects/{PROJECT}/topics/too-large"
    subscription = f"projects/{PROJECT}/subscriptions/too-large-sub"
    services.create_topic_and_subscription(pubsub_emulator, topic, subscription, ack_deadline=10)
    small = build_stream(1, 40, int(time.time() * 1000), shape="node")
    big = incompressible_request(2_000_000, "unpullable", int(time.time() * 1000))
    publish_bodies(topic, small[:20])
    publish_raw(topic, big, attributes_for(big))
    publish_bodies(topic, small[20:])

    client = pubsub.subscriber_client(max_receive_bytes=1 << 20)
    lease = pubsub.Lease(client, subscription)
    puller = pubsub.Puller(client, subscription, lease, threading.Event())
    got: set[bytes] = set()
    deadline = time.monotonic() + 90
    with caplog.at_level(logging.ERROR, logger="transforms.io.pubsub"):
        while len(got) < len(small) and time.monotonic() < deadline:
            received = puller.pull()
            got.update(r.message.data for r in received)
            pubsub.acknowledge(client, subscription, [r.ack_id for r in received])
    client.close()
    assert got == set(small), f"{len(got)} of {len(small)} small messages came through"
    assert puller.stats.too_large_pulls >= 1
    assert any("too large for the client" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


def test_a_backlog_of_1000_node_sized_messages_is_archived_and_forwarded_whole(topic_and_subscription, pubsub_emulator,
                                                                               victoria, log_dir, tmp_path):
    """1000 messages of ~44 KiB (1000 series x 10 labels): 1 M samples, archived and in VictoriaMetrics."""
    topic, subscription = topic_and_subscription
    sink_subscription(pubsub_emulator, topic, subscription.path, victoria)
    start_ms = (int(time.time() * 1000) - 2 * HOUR_MS) // 1000 * 1000
    bodies = build_stream(7, KIB44_MESSAGES, start_ms, shape="node")
    assert 40 << 10 < sum(map(len, bodies)) / len(bodies) < 48 << 10
    publish_bodies(topic, bodies)
    expected = sent_samples(bodies)
    total = sum(len(v) for v in expected.values())
    assert total == KIB44_MESSAGES * SERIES_PER_REQUEST

    archive = tmp_path / "archive"
    pipeline = start_pipeline(log_dir, "pipeline-backlog", subscription.path, archive, victoria)
    with services.stopping(pipeline):
        match = '{job="node",stream="7"}'
        wait_for(lambda: sum(len(v) for v in vm_samples(victoria, match).values()) >= total, 600,
                 f"{total} samples in VictoriaMetrics")
        wait_for(lambda: sum(len(v) for v in archived_samples(archive).values()) >= total, 300,
                 f"{total} archived lines")
    assert vm_samples(victoria, match) == expected
    archived = archived_samples(archive)
    assert sum(len(v) for v in archived.values()) == total
    assert {k: sorted(v for _, v in samples) for k, samples in archived.items()} == \
        {k: sorted(v for _, v in samples) for k, samples in expected.items()}
    assert "too large" not in pipeline.log_path.read_text()


def test_requests_at_the_receivers_limits_are_accepted_archived_and_forwarded(topic_and_subscription, pubsub_emulator,
                                                                              victoria, log_dir, tmp_path):
    """One request that makes one ~9.4 MB message, and one the receiver splits into several."""
    from receiver.config import ReceiverConfig

    limits = ReceiverConfig(topic="projects/project/topics/topic")
    topic, subscription = topic_and_subscription
    sink_subscription(pubsub_emulator, topic, subscription.path, victoria)
    receiver, receiver_url = services.start_receiver(log_dir, pubsub_emulator, topic, name="receiver-large")
    archive = tmp_path / "archive"
    pipeline = start_pipeline(log_dir, "pipeline-limits", subscription.path, archive, victoria)
    now = int(time.time() * 1000)
    one_message = incompressible_request(limits.max_message_bytes - 50_000, "limit_one", now)
    split = incompressible_request(min(limits.max_body_bytes, limits.max_decompressed_bytes) - (1 << 20),
                                   "limit_split", now)
    assert 9_300_000 < len(one_message) < limits.max_message_bytes < len(split)
    headers = {"Content-Type": CONTENT_TYPE_V1, "Content-Encoding": "snappy", HEADER_VERSION: VERSION_HEADER_V1}
    with services.stopping(receiver, pipeline):
        for body in (one_message, split):
            response = requests.post(f"{receiver_url}/api/v1/write", data=body, headers=headers, timeout=120)
            assert response.status_code == 204, response.text
        expected = sent_samples([one_message, split])
        total = sum(len(v) for v in expected.values())
        match = '{__name__=~"limit_.*_metric"}'
        wait_for(lambda: sum(len(v) for v in vm_samples(victoria, match).values()) >= total, 300,
                 f"{total} samples in VictoriaMetrics")
        wait_for(lambda: sum(len(v) for v in archived_samples(archive).values()) >= total, 300,
                 f"{total} archived lines")
        _, metrics = services.http_get(f"{receiver_url}/metrics")
    published = [line for line in metrics.decode().splitlines() if line.startswith("receiver_published_messages_total")]
    assert float(published[0].split()[-1]) >= 3, "one message, then the split body's several"
    assert vm_samples(victoria, match) == {k: [(t, v) for t, v in samples] for k, samples in expected.items()}
    archived = archived_samples(archive)
    assert sum(len(v) for v in archived.values()) == total
    assert {k: [v for _, v in samples] for k, samples in archived.items()} == \
        {k: [v for _, v in samples] for k, samples in expected.items()}
