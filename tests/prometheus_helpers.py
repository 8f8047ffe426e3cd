"""Helpers shared by the tests that run a real Prometheus 2.42 remote-writing to the receiver."""

from __future__ import annotations

import collections
import re
import time

import requests

from tools import services

SCRAPE_SECONDS = 12  # how long the stack scrapes before node_exporter is stopped


def prometheus_config(receiver_url: str, prometheus_port: int | None, node: str | None) -> str:
    scrape = ""
    if prometheus_port and node:
        scrape = f"""
scrape_configs:
  - job_name: prometheus
    static_configs: [{{targets: ["127.0.0.1:{prometheus_port}"]}}]
  - job_name: node
    static_configs: [{{targets: ["{node}"]}}]
"""
    return f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
{scrape}
remote_write:
  - url: {receiver_url}/api/v1/write
    name: receiver
    remote_timeout: 30s
    queue_config: {{batch_send_deadline: 1s, max_samples_per_send: 500}}
    metadata_config: {{send: true, send_interval: 2s}}
"""


def own_metrics(prometheus_url: str) -> dict[str, float]:
    """Prometheus' own remote-storage counters, summed over label sets."""
    text = requests.get(f"{prometheus_url}/metrics", timeout=10).text
    totals: dict[str, float] = collections.defaultdict(float)
    for line in text.splitlines():
        match = re.match(r"(prometheus_remote_storage_\w+)(?:\{[^}]*\})? (\S+)$", line)
        if match:
            totals[match.group(1)] += float(match.group(2))
    return totals


def series_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def stop_scraping(prometheus, prometheus_url: str, receiver_url: str) -> None:
    """Reload Prometheus with the same remote_write block and no scrape jobs: its queue carries on."""
    config_path = next(a for a in prometheus.process.args if a.startswith("--config.file=")).split("=", 1)[1]
    with open(config_path, "w") as handle:
        handle.write(prometheus_config(receiver_url, None, None))
    assert requests.post(f"{prometheus_url}/-/reload", timeout=30).status_code == 200


def wait_sent(prometheus_url: str, timeout: float = 120) -> dict[str, float]:
    """Wait until Prometheus has nothing pending and its sent-samples counter stands still; its counters."""
    def settled() -> bool:
        first = own_metrics(prometheus_url)
        time.sleep(3)
        second = own_metrics(prometheus_url)
        return (first["prometheus_remote_storage_samples_total"] == second["prometheus_remote_storage_samples_total"]
                and second["prometheus_remote_storage_samples_pending"] == 0)

    services.wait_until(settled, timeout, "Prometheus to finish sending")
    return own_metrics(prometheus_url)


def stop_scraping_and_settle(prometheus, prometheus_url: str, receiver_url: str, node) -> dict[str, float]:
    """Let Prometheus scrape, then stop node_exporter (its series go stale) and all scraping, and wait
    until Prometheus has sent everything. Returns its final remote-storage counters."""
    time.sleep(SCRAPE_SECONDS)
    node.stop()  # its next failed scrape marks all its series stale
    time.sleep(3)
    stop_scraping(prometheus, prometheus_url, receiver_url)
    sent = wait_sent(prometheus_url, 90)
    assert sent["prometheus_remote_storage_samples_total"] > 1000
    assert sent["prometheus_remote_storage_samples_failed_total"] == 0
    assert sent["prometheus_remote_storage_samples_retried_total"] == 0
    assert sent["prometheus_remote_storage_samples_dropped_total"] == 0
    assert sent["prometheus_remote_storage_metadata_failed_total"] == 0
    return sent


def tsdb_samples(prometheus_url: str) -> dict[tuple, list[tuple[int, float]]]:
    """Every raw sample in Prometheus' own TSDB (stale markers are not returned by queries)."""
    result = requests.get(f"{prometheus_url}/api/v1/query",
                          params={"query": '{__name__=~".+"}[10m]', "time": time.time()}, timeout=60).json()
    assert result["status"] == "success"
    return {series_key(r["metric"]): [(round(float(t) * 1000), float(v)) for t, v in r["values"]]
            for r in result["data"]["result"]}
