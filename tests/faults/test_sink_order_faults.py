"""Issue 20's order faults on the local runner: `python -m pipeline` forwarding into a strict Prometheus 2.42
(no out-of-order window; the sink at `order: strict`) under steady load, killed with SIGKILL mid-stream and
restarted, and the sink frozen (SIGSTOP) for a while. Pub/Sub redelivers; redelivered samples the sink already
holds are counted as already delivered, never dead-lettered. Prometheus holds each sample at most once; what
it refused as older than a newer sample (a message Pub/Sub brought back after newer ones, never delivered) is
a dead letter, so nothing is lost silently. ~4 minutes: `make chaos` only (tests/run_suite.sh leaves it out)."""

from __future__ import annotations

import base64
import json
import os
import signal
import time

from tests.fault_helpers import SteadyPublisher, expected_samples, fault_requests, kill9, outage_seconds, start_pipeline
from tests.integration.test_sinks_real_stores import prometheus_raw
from tests.sink_helpers import BASE_MS
from tools import services
from tools.run_local import scrape, total
from transforms.core.protocol import Protocol
from transforms.core.wire import codec

REQUESTS, SERIES, PER_SECOND = 240, 100, 6.0  # 24,000 samples over 40 s
QUIET_SECONDS = 70  # longer than the subscriptions' 60 s ack deadline


def counts_by_reason(dead_samples: dict[str, set], held_samples: set) -> dict[str, str]:
    return {kind: f"{len(found)} ({len(found & held_samples)} held by Prometheus)"
            for kind, found in dead_samples.items()}


def test_redeliveries_into_a_strict_prometheus_are_already_delivered_and_nothing_is_lost(
        log_dir, pubsub_emulator, topic_and_subscription, tmp_path):
    topic, subscription = topic_and_subscription
    archive = tmp_path / "archive"
    prometheus, prom_url = services.start_prometheus(log_dir, "global: {}\n", receiver=True, name="prom-order-faults")
    port = services.free_port()
    metrics_url = f"http://{services.LOOPBACK}:{port}"
    flags = (f"--remote_write_url={prom_url}/api/v1/write", "--remote_write_order=strict")
    publisher = SteadyPublisher(topic, fault_requests("order", REQUESTS, SERIES, BASE_MS), PER_SECOND)
    pipeline = start_pipeline(log_dir, "pipeline-order-1", subscription.path, archive, port, flags)
    stopped_for = outage_seconds("CHAOS_SINK_FROZEN", 20)
    before_kill: dict = {}
    try:
        publisher.start()
        services.wait_until(lambda: total(scrape(metrics_url), "pipeline_sink_samples_sent_total") >= 2000, 60,
                            "the sink to be receiving", interval=0.2)
        before_kill = scrape(metrics_url)
        kill9(pipeline)  # first kill: between or during flushes
        pipeline = start_pipeline(log_dir, "pipeline-order-2", subscription.path, archive, port, flags)
        sent = total(scrape(metrics_url), "pipeline_sink_samples_sent_total")
        os.kill(prometheus.pid, signal.SIGSTOP)  # the sink freezes: the backlog grows in Pub/Sub
        try:
            time.sleep(stopped_for)  # a deliberate outage: what is being measured is the time it lasts
        finally:
            os.kill(prometheus.pid, signal.SIGCONT)
        # second kill: while the backlog is being delivered, so some of it was accepted but never acked
        services.wait_until(lambda: total(scrape(metrics_url), "pipeline_sink_samples_sent_total") > sent, 60,
                            "the backlog to start flowing", interval=0.01)
        kill9(pipeline)
        pipeline = start_pipeline(log_dir, "pipeline-order-3", subscription.path, archive, port, flags)
        publisher.finish(180)
        expected = expected_samples("order", REQUESTS, SERIES, BASE_MS)
        wanted = REQUESTS * SERIES

        # What the killed process held comes back once its ack deadline (60 s) expires: wait until nothing
        # has been pulled for longer than that.
        last = {"pulled": -1.0, "at": time.monotonic()}

        def quiet() -> bool:
            pulled = total(scrape(metrics_url), "pipeline_pulled_messages_total")
            if pulled != last["pulled"]:
                last.update(pulled=pulled, at=time.monotonic())
            return time.monotonic() - last["at"] > QUIET_SECONDS

        services.wait_until(quiet, 300, "the redeliveries to be over", interval=1.0)
        metrics = scrape(metrics_url)
        got = prometheus_raw(prom_url, "order_metric")
    finally:
        publisher.halt.set()
        pipeline.stop()
        prometheus.stop()
    held_samples = {(key, t, v) for key, samples in got.items() for t, v in samples}
    dead_letters = [json.loads(line) for path in (archive / "_dead_letters").rglob("*.ndjson")
                    for line in path.read_text().splitlines()]
    dead_samples: dict[str, set] = {"never delivered": set(), "maybe already delivered": set(), "other": set()}
    for record in dead_letters:
        kind = next((k for k in dead_samples if k in record["error"]), "other")
        body = codec.decode(base64.b64decode(record["data_base64"]), Protocol.V1, 1 << 24).message
        for s in body.timeseries:
            key = tuple(sorted((lab.name, lab.value) for lab in s.labels))
            dead_samples[kind] |= {(key, x.timestamp, x.value) for x in s.samples}
    every_dead = set().union(*dead_samples.values())
    wanted_samples = {(key, t, v) for key, samples in expected.items() for t, v in samples}
    assert held_samples <= wanted_samples  # nothing invented, and Prometheus holds each sample once
    assert not wanted_samples - held_samples - every_dead  # nothing silently lost
    # Every sample the sink accepted is in the record (journaled at the 2xx, or sent by a killed run and in
    # its .sending file): none it holds is a dead letter, not even a "maybe".
    assert not every_dead & held_samples, counts_by_reason(dead_samples, held_samples)
    already = total(metrics, "pipeline_sink_samples_already_delivered_total")
    counts = counts_by_reason(dead_samples, held_samples)
    print(f"\n{wanted} samples, pipeline killed after {total(before_kill, 'pipeline_sink_samples_sent_total'):.0f} "
          f"sent, sink frozen {stopped_for:.0f} s, killed again as the backlog flowed: Prometheus holds "
          f"{len(held_samples)} once each; after the last restart {already:.0f} already delivered; "
          f"dead-lettered (replayable), by reason: {counts}")
