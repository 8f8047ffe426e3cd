"""Helpers shared by the tests that run a real Prometheus 2.42 remote-writing to the receiver."""

from __future__ import annotations

import collections
import re

import requests


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
