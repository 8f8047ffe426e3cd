"""A real Prometheus 2.42 scrapes itself and node_exporter and remote-writes to the receiver.

Everything Prometheus says it sent must be in Pub/Sub, with 0 failed samples, and the
samples must be exactly what Prometheus holds in its own TSDB (values bit for bit,
stale markers included).
"""

from __future__ import annotations

import collections
import math
import time
from datetime import datetime

import pytest

from tests.pipeline_helpers import LoopThread
from tests.prometheus_helpers import prometheus_config, series_key, stop_scraping_and_settle, tsdb_samples
from tools import services
from tools.archive import read_archive
from transforms.core.protocol import STALE_NAN, float_bits, is_stale_marker


@pytest.fixture
def stack(log_dir, pubsub_emulator, topic_and_subscription):
    topic, subscription = topic_and_subscription
    receiver, receiver_url = services.start_receiver(log_dir, pubsub_emulator, topic, name="receiver-e2e")
    node, node_addr = services.start_node_exporter(log_dir)
    port = services.free_port()
    config = prometheus_config(receiver_url, port, node_addr)
    prometheus, prometheus_url = services.start_prometheus(log_dir, config, port=port)
    try:
        yield prometheus, prometheus_url, receiver_url, subscription, node
    finally:
        for service in (prometheus, node, receiver):
            service.stop()


def assert_same_samples(tsdb: dict, pulled: dict) -> None:
    assert len(tsdb) > 500
    for key, samples in tsdb.items():
        got = sorted((t, v) for t, v in pulled.get(key, []) if not is_stale_marker(v))
        assert len(got) == len(samples), f"{dict(key)}: {len(got)} archived/pulled, {len(samples)} in TSDB"
        for (t1, v1), (t2, v2) in zip(got, samples, strict=True):
            assert t1 == t2 and (v1 == v2 or (math.isnan(v1) and math.isnan(v2))), (dict(key), t1, v1, v2)
    assert set(pulled) - set(tsdb) == set(), "every series is in Prometheus' TSDB"


def test_prometheus_remote_write_reaches_pubsub_complete_and_exact(stack):
    prometheus, prometheus_url, receiver_url, subscription, node = stack
    sent = stop_scraping_and_settle(prometheus, prometheus_url, receiver_url, node)

    # Everything in Pub/Sub, decoded with the shared codec.
    pulled: dict[tuple, list[tuple[int, float]]] = collections.defaultdict(list)
    metadata = 0
    total = 0
    deadline = time.monotonic() + 60
    while total < sent["prometheus_remote_storage_samples_total"] and time.monotonic() < deadline:
        for message in subscription.drain(quiet=1.0):
            decoded = message.decode()
            assert message.attributes["protocol"] == "1.0"
            assert int(message.attributes["samples"]) == decoded.counts.samples
            metadata += decoded.counts.metadata
            for ts in decoded.message.timeseries:
                key = series_key({lab.name: lab.value for lab in ts.labels})
                pulled[key] += [(s.timestamp, s.value) for s in ts.samples]
                total += len(ts.samples)
    assert total == sent["prometheus_remote_storage_samples_total"]
    assert metadata > 0, "Prometheus' metadata requests should have been published too"

    # Stale markers: the vanished target's series end with one, bit-exact.
    node_series = [k for k in pulled if dict(k).get("job") == "node" and not dict(k)["__name__"].startswith(
        ("up", "scrape_"))]
    assert len(node_series) > 100
    for key in node_series:
        last_value = max(pulled[key])[1]  # Pub/Sub does not keep order; the newest sample is the marker
        assert is_stale_marker(last_value) and float_bits(last_value) == 0x7FF0000000000002, dict(key)

    # The samples equal Prometheus' own TSDB, series by series, value for value.
    assert_same_samples(tsdb_samples(prometheus_url), pulled)


def archived_value(line: dict) -> float:
    value = (line.get("counter") or line.get("gauge"))["value"]
    special = {"+Inf": math.inf, "-Inf": -math.inf, "StaleNaN": STALE_NAN, "NaN": math.nan}
    return special.get(value, value) if isinstance(value, str) else float(value)


def test_prometheus_to_archive_holds_what_prometheus_holds(stack, tmp_path):
    """Real Prometheus -> receiver -> Pub/Sub -> pipeline (local runner) -> archive on local disk."""
    prometheus, prometheus_url, receiver_url, subscription, node = stack
    archive = tmp_path / "archive"
    with LoopThread(subscription.path, archive, window=3) as loop:
        sent = stop_scraping_and_settle(prometheus, prometheus_url, receiver_url, node)
        total = sent["prometheus_remote_storage_samples_total"]
        services.wait_until(lambda: loop.loop.totals.get("lines", 0) >= total, 90, "the archive to catch up")
    archived: dict[tuple, list[tuple[int, float]]] = collections.defaultdict(list)
    kinds = collections.Counter()
    for lines in read_archive(str(archive)).values():
        for line in lines:
            key = series_key({"__name__": line["name"], **line["tags"]})
            stamp = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
            archived[key].append((round(stamp.timestamp() * 1000), archived_value(line)))
            kinds["counter" if "counter" in line else "gauge"] += 1
    assert sum(len(v) for v in archived.values()) == total
    assert_same_samples(tsdb_samples(prometheus_url), archived)
    # types came from Prometheus' metadata requests, remembered across requests: counters are counters
    assert kinds["counter"] > 100
    counter_names = {dict(k)["__name__"] for k in archived if dict(k)["__name__"].endswith("_total")}
    assert "prometheus_http_requests_total" in counter_names
