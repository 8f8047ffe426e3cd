"""The reader's own Prometheus metrics, served on GET /metrics (multiprocess under gunicorn, as the receiver)."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess


class ReaderMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()  # one per app, so several apps (as in tests) do not collide
        r = self.registry
        self.requests = Counter("reader_requests_total", "Read requests answered, by HTTP status and response type.",
                                ["code", "response_type"], registry=r)
        self.queries = Counter("reader_queries_total", "Queries answered.", registry=r)
        self.samples = Counter("reader_samples_returned_total", "Samples returned.", registry=r)
        self.files = Counter("reader_files_read_total", "Parquet files opened.", registry=r)
        self.rows = Counter("reader_rows_read_total", "Rows read from Parquet that passed the pushed-down filter "
                            "(time range, float samples, a pinned name).", registry=r)
        self.bytes_read = Counter("reader_bytes_read_total",
                                  "Parquet bytes read: file footers not cached yet and the read columns' chunks "
                                  "of the row groups left after pruning.", registry=r)
        self.response_bytes = Counter("reader_response_bytes_total", "Response bytes sent (before snappy).",
                                      registry=r)
        self.seconds = Histogram("reader_request_duration_seconds",
                                 "Time until a read request's answer starts (a streamed answer's frames are sent "
                                 "after).",
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                                 registry=r)

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
