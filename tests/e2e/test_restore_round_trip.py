"""The backup closes its loop: a real Prometheus 2.42 scrapes itself and node_exporter and remote-writes
to the receiver; the pipeline archives in BOTH formats (two subscriptions of the same topic);
`python -m pipeline.restore` writes each archive into an empty VictoriaMetrics and an empty Prometheus.
Both hold exactly what the source Prometheus' TSDB holds: the same series, the same samples, values
exact; the vanished target's series end with a stale marker; metadata is sent again: a capture sink (a 1.0
receiver, decoded by upb) gets every family's type, help and unit as the source Prometheus' own
/api/v1/metadata states them (neither store keeps remote-written metadata in these versions)."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import requests

from tests.pipeline_helpers import LoopThread
from tests.prometheus_helpers import prometheus_config, stop_scraping_and_settle, tsdb_samples
from tests.sink_helpers import Capture, vm_export
from tools import services
from transforms.core.metadata import TYPE_NAMES
from transforms.core.protocol import Protocol
from transforms.core.wire import codec

FORMATS = ("ndjson", "parquet")


@pytest.fixture
def source(log_dir, pubsub_emulator, topic_and_subscription):
    topic, subscription = topic_and_subscription
    parquet_subscription = f"{subscription.path}-parquet"
    services.create_subscription(pubsub_emulator, topic, parquet_subscription)  # before any data is sent
    receiver, receiver_url = services.start_receiver(log_dir, pubsub_emulator, topic, name="receiver-restore")
    node, node_addr = services.start_node_exporter(log_dir)
    port = services.free_port()
    prometheus, prometheus_url = services.start_prometheus(log_dir, prometheus_config(receiver_url, port, node_addr),
                                                           port=port, name="prometheus-source")
    try:
        yield prometheus, prometheus_url, receiver_url, node, {"ndjson": subscription.path,
                                                                "parquet": parquet_subscription}
    finally:
        for service in (prometheus, node, receiver):
            service.stop()


def restore(archive, *urls: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "pipeline.restore", f"--archive_path={archive}",
            *[f"--remote_write_url={u}" for u in urls]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


def restored_in_prometheus(url: str) -> dict[tuple, list[tuple[int, float]]]:
    return tsdb_samples(url)


def instant_series(url: str, query: str, at: float) -> int:
    body = requests.get(f"{url}/api/v1/query", params={"query": query, "time": at}, timeout=30).json()
    assert body["status"] == "success", body
    return len(body["data"]["result"])


def same(expected: dict, got: dict, what: str, rel_tol: float = 0.0) -> None:
    assert set(got) == set(expected), f"{what}: series differ: {sorted(set(got) ^ set(expected))[:5]}"
    for key, samples in expected.items():
        mine = got[key]
        assert [t for t, _ in mine] == [t for t, _ in samples], f"{what} {dict(key)}: timestamps differ"
        for (_, a), (_, b) in zip(mine, samples, strict=True):
            exact = a == b or (math.isnan(a) and math.isnan(b))
            assert exact or math.isclose(a, b, rel_tol=rel_tol), f"{what} {dict(key)}: {a} != {b}"


def source_metadata(url: str) -> dict[str, set[tuple[str, str, str]]]:
    """family -> {(type, help, unit), ...} as Prometheus learnt them from its active targets (two targets may
    describe a family alike or not: node_exporter's and Prometheus' own go_* families)."""
    body = requests.get(f"{url}/api/v1/metadata", timeout=30).json()
    assert body["status"] == "success", body
    return {family: {(e["type"], e["help"], e["unit"]) for e in entries} for family, entries in body["data"].items()}


def captured_metadata() -> dict[str, tuple[str, str, str]]:
    out = {}
    for _, _, body in Capture.seen:
        for m in codec.decode(body, Protocol.V1, 1 << 24).message.metadata:
            out[m.metric_family_name] = (TYPE_NAMES[m.type], m.help, m.unit)
    return out


def test_both_archives_restore_exactly_into_victoria_metrics_and_prometheus(source, log_dir, tmp_path, capture):
    prometheus, prometheus_url, receiver_url, node, subscriptions = source
    archives = {fmt: tmp_path / f"archive-{fmt}" for fmt in FORMATS}
    loops = [LoopThread(subscriptions[fmt], archives[fmt], window=3, extra=(f"--archive_format={fmt}",))
             for fmt in FORMATS]
    for loop in loops:
        loop.__enter__()
    try:
        # what the source scraped, asked while its targets are up (the API forgets them when scraping stops)
        services.wait_until(lambda: len(source_metadata(prometheus_url)) > 200, 60, "the source to scrape metadata")
        described = source_metadata(prometheus_url)
        sent = stop_scraping_and_settle(prometheus, prometheus_url, receiver_url, node)
        total = sent["prometheus_remote_storage_samples_total"]
        for loop in loops:
            services.wait_until(lambda loop=loop: loop.loop.totals.get("lines", 0) >= total, 90, "archives")
    finally:
        for loop in loops:
            loop.__exit__(None, None, None)
    source_tsdb = tsdb_samples(prometheus_url)  # queries hide stale markers
    assert any(kind == "summary" for entries in described.values() for kind, _, _ in entries), "Go's summaries"
    assert len(source_tsdb) > 500 and sum(map(len, source_tsdb.values())) > 5000
    ended = [k for k in source_tsdb
             if dict(k).get("job") == "node" and not re.match(r"up$|scrape_", dict(k)["__name__"])]
    # VictoriaMetrics 1.79 drops ordinary NaN samples on ingestion (it keeps only stale markers), whoever sends them
    without_nan = {k: [(t, v) for t, v in s if not math.isnan(v)] for k, s in source_tsdb.items()}
    without_nan = {k: s for k, s in without_nan.items() if s}
    assert len(without_nan) < len(source_tsdb)  # summaries' quantiles over no observations are NaN
    last_node = max(t for k in ended for t, _ in source_tsdb[k]) / 1000
    exporter_metrics = '{job="node",__name__!~"up|scrape_.*"}'
    # the stale marker after node_exporter stopped ends its series at once (not 5 minutes of look-back)
    assert instant_series(prometheus_url, exporter_metrics, last_node) > 100
    assert instant_series(prometheus_url, exporter_metrics, last_node + 30) == 0

    for fmt in FORMATS:
        vm, vm_url = services.start_victoria_metrics(log_dir, name=f"vm-restore-{fmt}")
        prom, prom_url = services.start_prometheus(log_dir, "global: {}\n", receiver=True, name=f"prom-restore-{fmt}")
        try:
            Capture.seen = []
            done = restore(archives[fmt], f"{vm_url}/api/v1/write", f"{prom_url}/api/v1/write", capture)
            assert done.returncode == 0, done.stderr[-3000:]
            summary = [line for line in done.stdout.splitlines() if line.startswith("restore: sink")]
            assert len(summary) == 3 and all(" 0 dead-lettered" in line for line in summary), done.stdout
            assert all(int(re.search(r"(\d+) metadata entries", line)[1]) > 0 for line in summary), summary

            # metadata: what the capture sink received is what the source scraped (type, help, unit), per family
            restored_metadata = captured_metadata()
            scraped = {family: entry for family, entry in described.items()
                       if any(dict(k)["__name__"].startswith(family) for k in source_tsdb)}
            assert len(scraped) > 100
            differs = {f: (restored_metadata.get(f), entries) for f, entries in scraped.items()
                       if restored_metadata.get(f) not in entries}
            assert not differs, f"{fmt}: metadata differs: {list(differs.items())[:5]}"

            # Prometheus: the same series and samples, and the stale markers end node's series
            same(source_tsdb, restored_in_prometheus(prom_url), f"{fmt} -> Prometheus")
            assert instant_series(prom_url, exporter_metrics, last_node) == instant_series(
                prometheus_url, exporter_metrics, last_node)
            assert instant_series(prom_url, exporter_metrics, last_node + 30) == 0, "stale markers end the series"

            # VictoriaMetrics: the same, with each stale marker stored as the series' last point (null)
            expected_points = sum(map(len, without_nan.values())) + len(ended)  # + the stale markers
            services.wait_until(lambda url=vm_url, n=expected_points: sum(
                map(len, vm_export(url, '{__name__=~".+"}').values())) >= n, 30,
                "VictoriaMetrics to make the restored samples searchable")
            exported = vm_export(vm_url, '{__name__=~".+"}')
            plain = {k: [(t, v) for t, v in s if v is not None] for k, s in exported.items()}
            # VictoriaMetrics stores floats as decimal mantissa + exponent: 12-13 significant digits survive
            same(without_nan, {k: s for k, s in plain.items() if s}, f"{fmt} -> VictoriaMetrics", rel_tol=1e-12)
            assert len(ended) > 100 and all(exported[k][-1][1] is None for k in ended)
        finally:
            vm.stop()
            prom.stop()
