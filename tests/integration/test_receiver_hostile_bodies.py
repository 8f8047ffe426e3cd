"""Hostile bodies against the real receiver under gunicorn: each costs a bounded amount.

A few megabytes of snappy that expand into millions of tiny protobuf fields used to cost a worker
seconds of CPU and gigabytes (issue 10). Now each shape is refused with 413 before it is parsed,
16 of them at once keep each worker's RSS within the 256 MiB per-request budget, and a real
Prometheus writing meanwhile loses nothing.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests import hostile_bodies
from tests.prometheus_helpers import own_metrics, prometheus_config
from tools import services
from transforms.core.protocol import CONTENT_TYPE_V1, CONTENT_TYPE_V2, Protocol

MIB = 1024 * 1024
RSS_BUDGET = 256 * MIB
PAYLOAD = 16 * MIB  # the default --max-decompressed-bytes: the largest a hostile body may expand to
HEADERS = {
    Protocol.V1: {"Content-Type": CONTENT_TYPE_V1, "Content-Encoding": "snappy"},
    Protocol.V2: {"Content-Type": CONTENT_TYPE_V2, "Content-Encoding": "snappy"},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, pubsub_emulator):
    """One receiver (defaults: 2 workers x 8 threads) and a Prometheus remote-writing to it."""
    log_dir = tmp_path_factory.mktemp("hostile-bodies")
    topic = "projects/test-project/topics/hostile-bodies"
    services.create_topic_and_subscription(pubsub_emulator, topic, "projects/test-project/subscriptions/hostile")
    receiver, url = services.start_receiver(log_dir, pubsub_emulator, topic, name="receiver-hostile-bodies")
    port = services.free_port()
    try:
        prometheus, prometheus_url = services.start_prometheus(
            log_dir, prometheus_config(url, port, f"127.0.0.1:{port}"), port=port, name="prometheus-hostile")
    except Exception:
        receiver.stop()
        raise
    try:
        services.wait_until(lambda: own_metrics(prometheus_url).get("prometheus_remote_storage_samples_total", 0) > 0,
                            60, "Prometheus to send samples")
        yield receiver, url, prometheus_url
    finally:
        prometheus.stop()
        receiver.stop()


def worker_pids(master: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class PeakRss(threading.Thread):
    """Samples the workers' RSS until stopped; keeps each one's peak."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.peaks = {pid: rss(pid) for pid in pids}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.01):
            for pid in self.peaks:
                self.peaks[pid] = max(self.peaks[pid], rss(pid))


def post_until_answered(url: str, body: bytes, headers: dict[str, str]) -> requests.Response:
    """A hostile sender that retries 503 (over --max-in-flight-bytes) until it gets its real answer."""
    with requests.Session() as session:
        for _ in range(200):
            response = session.post(f"{url}/api/v1/write", data=body, headers=headers, timeout=60)
            if response.status_code != 503:
                return response
        return response


@pytest.mark.parametrize("shape", list(hostile_bodies.SHAPES))
def test_hostile_shape_is_413_and_16_at_once_stay_within_the_memory_budget(stack, shape):
    receiver, url, prometheus_url = stack
    protocol, body = hostile_bodies.body(shape, PAYLOAD)
    workers = worker_pids(receiver.pid)
    assert len(workers) == 2
    baseline = {pid: rss(pid) for pid in workers}
    sampler = PeakRss(workers)
    sampler.start()
    sent_before = own_metrics(prometheus_url)["prometheus_remote_storage_samples_total"]
    try:
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda _: post_until_answered(url, body, HEADERS[protocol]), range(16)))
    finally:
        sampler.done.set()
        sampler.join()
    for pid in workers:
        growth = sampler.peaks[pid] - baseline[pid]
        assert growth < RSS_BUDGET, f"worker {pid} grew {growth / MIB:.0f} MiB for {shape}"
    assert [r.status_code for r in responses] == [413] * 16, responses[0].text
    assert "over the limit of --max-" in responses[0].json()["error"]
    services.wait_until(
        lambda: own_metrics(prometheus_url)["prometheus_remote_storage_samples_total"] > sent_before, 60,
        "Prometheus to keep sending")
    metrics = own_metrics(prometheus_url)
    assert metrics["prometheus_remote_storage_samples_failed_total"] == 0
