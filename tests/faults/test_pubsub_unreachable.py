"""Fault 3.4: Pub/Sub unreachable for 30 s while a real Prometheus 2.42 writes to the receiver.

The emulator keeps topics, subscriptions and messages in memory only (its --dir stays empty; after
a restart the subscription is gone: checked), so killing it would lose the evidence. Instead the
receiver reaches it through a TCP proxy the test owns; cutting the proxy closes its listener and
resets every connection, which is what the receiver sees when Pub/Sub is down. Meanwhile the
receiver answers 503 with Retry-After and /-/ready fails; once Pub/Sub is back, every sample of
Prometheus' own TSDB is in Pub/Sub and Prometheus reports 0 failed samples."""

from __future__ import annotations

import time

import requests

from tests.fault_helpers import TcpProxy, compare, non_stale, outage_seconds, seen_in_messages
from tests.prometheus_helpers import own_metrics, prometheus_config, stop_scraping, tsdb_samples, wait_sent
from tools import services
from tools.run_local import scrape, total
from transforms.core.protocol import CONTENT_TYPE_V1, HEADER_VERSION, VERSION_HEADER_V1
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1

OUTAGE_SECONDS = outage_seconds("CHAOS_PUBSUB_DOWN", 30)
V1 = {"Content-Type": CONTENT_TYPE_V1, "Content-Encoding": "snappy", HEADER_VERSION: VERSION_HEADER_V1}


def test_pubsub_unreachable_503_not_ready_then_nothing_lost(log_dir, pubsub_emulator, topic_and_subscription,
                                                            tmp_path):
    topic, subscription = topic_and_subscription
    with TcpProxy(pubsub_emulator) as proxy:
        receiver, receiver_url = services.start_receiver(
            log_dir, proxy.address, topic, name="receiver-pubsub-down",
            env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
        node, node_addr = services.start_node_exporter(log_dir)
        port = services.free_port()
        prometheus, prometheus_url = services.start_prometheus(
            log_dir, prometheus_config(receiver_url, port, node_addr), port=port, name="prometheus-pubsub-down")
        probe = codec.encode(build_v1([Series({"__name__": "probe_during_outage"}, [(int(time.time() * 1000), 1.0)])]))
        try:
            assert requests.get(f"{receiver_url}/-/ready", timeout=10).status_code == 200
            services.wait_until(lambda: own_metrics(prometheus_url)["prometheus_remote_storage_samples_total"] > 3000,
                                60, "Prometheus to be streaming to the receiver")
            proxy.cut()
            outage_ends = time.monotonic() + OUTAGE_SECONDS
            answer = requests.post(f"{receiver_url}/api/v1/write", data=probe, headers=V1, timeout=30)
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["Retry-After"]) >= 1
            not_ready = requests.get(f"{receiver_url}/-/ready", timeout=10)
            assert not_ready.status_code == 503 and "unreachable" in not_ready.json()["error"]
            time.sleep(max(0.0, outage_ends - time.monotonic()))  # the outage itself, by design
            before = own_metrics(prometheus_url)["prometheus_remote_storage_samples_total"]
            proxy.restore()
            # gRPC reconnects with backoff (up to 120 s between attempts)
            services.wait_until(lambda: requests.get(f"{receiver_url}/-/ready", timeout=10).status_code == 200, 180,
                                "the receiver to be ready again")
            recovered = time.monotonic() - outage_ends
            services.wait_until(
                lambda: own_metrics(prometheus_url)["prometheus_remote_storage_samples_total"] > before + 3000,
                120, "Prometheus to send again")
            stop_scraping(prometheus, prometheus_url, receiver_url)
            sent = wait_sent(prometheus_url)
            tsdb = tsdb_samples(prometheus_url)
            refused = total(scrape(receiver_url), "receiver_requests_total", code="503")
        finally:
            prometheus.stop()
            node.stop()
            receiver.stop()

    assert sent["prometheus_remote_storage_samples_failed_total"] == 0
    assert sent["prometheus_remote_storage_samples_dropped_total"] == 0
    assert sent["prometheus_remote_storage_samples_retried_total"] > 0
    assert refused >= 2, "Prometheus' requests during the outage were refused with 503 too"
    seen = seen_in_messages(subscription.drain(quiet=2.0, timeout=120))
    seen.pop((("__name__", "probe_during_outage"),), None)  # answered 503: may or may not have landed later
    missing, duplicates = compare(tsdb, seen)
    in_tsdb = sum(len(v) for v in tsdb.values())
    print(f"\nPub/Sub unreachable {OUTAGE_SECONDS:.0f} s: {refused:.0f} requests answered 503; ready again "
          f"{recovered:.1f} s after it came back; TSDB {in_tsdb} samples, Pub/Sub {non_stale(seen)} distinct, "
          f"{duplicates} duplicates; Prometheus retried {sent['prometheus_remote_storage_samples_retried_total']:.0f}"
          ", failed 0")
    assert len(tsdb) > 500
    assert not missing, f"{len(missing)} of {in_tsdb} TSDB samples not in Pub/Sub, e.g. {missing[:5]}"
