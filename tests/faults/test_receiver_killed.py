"""Fault 3.1: a real Prometheus 2.42 writes to the receiver; every receiver process (gunicorn's master
and its workers) is killed with SIGKILL mid-stream and the receiver restarts on the same port 5 s later.
Every sample in Prometheus' own TSDB must be in Pub/Sub, and Prometheus reports 0 failed samples
(it retries refused connections; a request published but not yet answered when the kill came is sent
again, so duplicates are counted and reported, never a failure)."""

from __future__ import annotations

import time

from tests.fault_helpers import compare, kill9, non_stale, outage_seconds, seen_in_messages
from tests.prometheus_helpers import own_metrics, prometheus_config, stop_scraping, tsdb_samples, wait_sent
from tools import services

DOWN_SECONDS = outage_seconds("CHAOS_RECEIVER_DOWN", 5)


def test_receiver_killed_mid_stream_loses_nothing_prometheus_sent(log_dir, pubsub_emulator, topic_and_subscription,
                                                                  tmp_path):
    topic, subscription = topic_and_subscription
    port = services.free_port()

    def start_receiver(n: int) -> services.Service:
        metrics_dir = tmp_path / f"receiver-metrics-{n}"  # our own dir: a SIGKILL leaves the receiver's behind
        metrics_dir.mkdir()
        service, _ = services.start_receiver(log_dir, pubsub_emulator, topic, port=port, name=f"receiver-killed-{n}",
                                             env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
        return service

    receiver = start_receiver(1)
    receiver_url = f"http://{services.LOOPBACK}:{port}"
    node, node_addr = services.start_node_exporter(log_dir)
    prometheus_port = services.free_port()
    prometheus, prometheus_url = services.start_prometheus(
        log_dir, prometheus_config(receiver_url, prometheus_port, node_addr), port=prometheus_port,
        name="prometheus-receiver-killed")
    try:
        services.wait_until(lambda: own_metrics(prometheus_url)["prometheus_remote_storage_samples_total"] > 3000,
                            60, "Prometheus to be streaming to the receiver")
        killed = kill9(receiver)
        assert len(killed) >= 3, f"gunicorn master and its 2 workers, got {killed}"
        time.sleep(DOWN_SECONDS)  # the outage itself, by design
        assert not services.port_in_use(port)
        before = own_metrics(prometheus_url)["prometheus_remote_storage_samples_total"]
        receiver = start_receiver(2)

        def sending_again() -> bool:  # the window spans before, during and after the outage
            return own_metrics(prometheus_url)["prometheus_remote_storage_samples_total"] > before + 3000

        services.wait_until(sending_again, 60, "Prometheus to send again after the restart")
        stop_scraping(prometheus, prometheus_url, receiver_url)
        sent = wait_sent(prometheus_url)
        tsdb = tsdb_samples(prometheus_url)
    finally:
        prometheus.stop()
        node.stop()
        receiver.stop()

    assert sent["prometheus_remote_storage_samples_failed_total"] == 0
    assert sent["prometheus_remote_storage_samples_dropped_total"] == 0
    assert sent["prometheus_remote_storage_samples_retried_total"] > 0, "the outage should have been seen"
    seen = seen_in_messages(subscription.drain(quiet=2.0, timeout=120))
    missing, duplicates = compare(tsdb, seen)
    in_tsdb = sum(len(v) for v in tsdb.values())
    print(f"\nreceiver killed ({len(killed)} processes), down {DOWN_SECONDS:.0f} s: TSDB {in_tsdb} samples in "
          f"{len(tsdb)} series; Pub/Sub {non_stale(seen)} distinct samples, {duplicates} duplicates; Prometheus "
          f"retried {sent['prometheus_remote_storage_samples_retried_total']:.0f}, failed 0")
    assert len(tsdb) > 500 and in_tsdb > 5000
    assert not missing, f"{len(missing)} of {in_tsdb} TSDB samples not in Pub/Sub, e.g. {missing[:5]}"
    assert set(seen) <= set(tsdb), "every series in Pub/Sub is in Prometheus' TSDB"
