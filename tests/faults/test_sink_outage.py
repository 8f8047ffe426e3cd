"""Fault 3.3: a VictoriaMetrics sink down under steady load, for 5 minutes in `make test` (which runs
this test alongside the rest of the suite, tests/run_suite.sh) and 30 in `make chaos`. Nothing is lost
(the archive and the sink hold every sample), the backlog drains at the end, retries are counted, and
the sink's backlog-age metric on the pipeline's /metrics rises during the outage and falls back to 0
afterwards."""

from __future__ import annotations

import threading
import time

from tests.fault_helpers import (
    SteadyPublisher,
    archive_seen,
    compare,
    count,
    expected_samples,
    fault_requests,
    outage_seconds,
    start_pipeline,
    vm_seen,
)
from tools import services
from tools.run_local import scrape, total
from transforms.core.sink import config

OUTAGE_SECONDS = outage_seconds("CHAOS_SINK_DOWN", 300)
SERIES, PER_SECOND = 50, 2.0
AGE = "pipeline_subscription_oldest_unacked_message_age_seconds"


class MetricsWatch(threading.Thread):
    """Scrapes the pipeline's /metrics once a second: (monotonic time, sink backlog age, retried samples)."""

    def __init__(self, url: str, sink: str) -> None:
        super().__init__(daemon=True)
        self.url, self.sink = url, sink
        self.points: list[tuple[float, float, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(1.0):
            found = scrape(self.url)
            if not isinstance(found, str):
                self.points.append((time.monotonic(), total(found, AGE, consumer=self.sink),
                                    total(found, "pipeline_sink_samples_retried_total", sink=self.sink)))

    def latest(self) -> tuple[float, float, float]:
        return self.points[-1] if self.points else (0.0, 0.0, 0.0)


def test_sink_down_under_steady_load_loses_nothing_and_the_backlog_drains(log_dir, pubsub_emulator,
                                                                         topic_and_subscription, tmp_path):
    topic, subscription = topic_and_subscription
    archive, vm_data = tmp_path / "archive", str(tmp_path / "vm-data")
    vm_port, port = services.free_port(), services.free_port()
    victoria, vm_url = services.start_victoria_metrics(log_dir, name="vm-sink-outage", port=vm_port, data_dir=vm_data)
    sink_name = config.from_flags([f"{vm_url}/api/v1/write"])[0].name
    metrics_url = f"http://{services.LOOPBACK}:{port}"
    # enough requests for the whole run at PER_SECOND; the publisher is halted when the test has seen enough
    requests_needed = int((OUTAGE_SECONDS + 120) * PER_SECOND)
    # request r is stamped base + r s: start far enough back that no stamp is ever in the future (a
    # 30-minute run publishes 3,840 requests), since VictoriaMetrics' export shows samples up to now only
    base_ms = int(time.time() * 1000) - requests_needed * 1000
    bodies = fault_requests("outage", requests_needed, SERIES, base_ms)
    publisher = SteadyPublisher(topic, bodies, PER_SECOND)
    pipeline = start_pipeline(log_dir, "pipeline-sink-outage", subscription.path, archive, port,
                              (f"--remote_write_url={vm_url}/api/v1/write",), window=2)
    watch = MetricsWatch(metrics_url, sink_name)
    try:
        publisher.start()
        watch.start()
        services.wait_until(lambda: vm_seen(vm_url, '{__name__="outage_metric"}'), 60, "delivery before the outage",
                            interval=0.5)
        victoria.stop()
        down_at = time.monotonic()
        services.wait_until(lambda: watch.latest()[2] > 0, 60, "the pipeline to retry the sink")
        time.sleep(max(0.0, down_at + OUTAGE_SECONDS - time.monotonic()))  # the outage itself, by design
        peak_age = watch.latest()[1]
        victoria, _ = services.start_victoria_metrics(log_dir, name="vm-sink-outage", port=vm_port, data_dir=vm_data)
        up_at = time.monotonic()
        time.sleep(5)  # steady load carries on a little after the outage: the drain happens under load
        publisher.halt.set()
        publisher.finish(60)
        published = publisher.published
        expected = expected_samples("outage", published, SERIES, base_ms)
        services.wait_until(lambda: not compare(expected, vm_seen(vm_url, '{__name__="outage_metric"}'))[0],
                            max(120.0, OUTAGE_SECONDS), "every sample in VictoriaMetrics", interval=1.0)
        drained = time.monotonic() - up_at
        services.wait_until(lambda: not compare(expected, archive_seen(archive))[0], 60, "every sample archived",
                            interval=1.0)
        services.wait_until(lambda: watch.latest()[1] == 0 and watch.latest()[0] > time.monotonic() - 2, 30,
                            "the sink's backlog age back to 0")
        delivered = vm_seen(vm_url, '{__name__="outage_metric"}')
        retried = watch.latest()[2]
    finally:
        watch.halt.set()
        publisher.halt.set()
        pipeline.stop()
        victoria.stop()
    wanted = published * SERIES
    missing, sink_duplicates = compare(expected, delivered)
    assert not missing and count(delivered) == wanted + sink_duplicates
    archived = archive_seen(archive)
    missing, archive_duplicates = compare(expected, archived)
    assert not missing and count(archived) == wanted + archive_duplicates
    ages_during = [age for t, age, _ in watch.points if down_at <= t <= up_at]
    print(f"\nsink down {OUTAGE_SECONDS:.0f} s under {PER_SECOND * SERIES:.0f} samples/s: {wanted} samples, 0 lost, "
          f"duplicates sink {sink_duplicates} / archive {archive_duplicates}; {retried:.0f} samples retried; "
          f"backlog age peaked at {max(ages_during):.0f} s, drained {drained:.1f} s after the sink came back")
    assert retried > 0
    assert peak_age >= OUTAGE_SECONDS * 0.6, f"backlog age should rise with the outage, peaked at {peak_age}"
    assert max(ages_during) <= OUTAGE_SECONDS + 15
