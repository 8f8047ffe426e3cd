"""The receiver's own Prometheus metrics, served on GET /metrics.

Under gunicorn each worker is a process, so prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by `python -m receiver`) aggregates them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from transforms.core.wire.validation import Counts


class ReceiverMetrics:
    def __init__(self) -> None:
        # A registry per app keeps several apps (as in tests) from colliding.
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("receiver_requests_total", "Write requests answered, by HTTP status.",
                                ["code", "protocol"], registry=r)
        self.samples = Counter("receiver_samples_accepted_total", "Float samples accepted.",
                               ["protocol"], registry=r)
        self.histograms = Counter("receiver_histograms_accepted_total", "Native histogram samples accepted.",
                                  ["protocol"], registry=r)
        self.exemplars = Counter("receiver_exemplars_accepted_total", "Exemplars accepted.",
                                 ["protocol"], registry=r)
        self.metadata = Counter("receiver_metadata_accepted_total", "Metadata entries accepted.",
                                ["protocol"], registry=r)
        self.bytes = Counter("receiver_request_bytes_total", "Compressed request body bytes received.",
                             registry=r)
        self.messages = Counter("receiver_published_messages_total", "Pub/Sub messages confirmed.",
                                registry=r)
        self.publish_seconds = Histogram(
            "receiver_publish_duration_seconds", "Time from publish to Pub/Sub confirmation.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r)
        self.in_flight = Gauge("receiver_requests_in_flight", "Write requests being handled.",
                               multiprocess_mode="livesum", registry=r)

    def accepted(self, protocol: str, counts: Counts) -> None:
        self.samples.labels(protocol).inc(counts.samples)
        self.histograms.labels(protocol).inc(counts.histograms)
        self.exemplars.labels(protocol).inc(counts.exemplars)
        self.metadata.labels(protocol).inc(counts.metadata)

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
