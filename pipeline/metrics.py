"""The local pipeline, observable the Prometheus way: /metrics, /-/healthy and /-/ready.

The loops keep their own plain counters (LocalLoop.totals, PullStats, SinkStats, Buckets); a
collector translates them at scrape time. So the registry belongs to the server the launcher
builds, nothing is a module global, and no prometheus_client metric object is created (which
would also switch to multiprocess files if PROMETHEUS_MULTIPROC_DIR happened to be set).

On Dataflow the same counters are Beam metrics (docs/operations.md maps the two).
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.forward_loop import ForwardLoop
from pipeline.local_loop import LocalLoop
from transforms.core.buckets import Buckets
from transforms.io.pubsub import Lease, PullStats

log = logging.getLogger(__name__)
DEFAULT_METRICS_PORT = 9202
METRICS_HOST = "127.0.0.1"  # loopback only: scrape it from this machine, or put a proxy in front

# LocalLoop.totals key -> (metric name without _total, help)
ARCHIVE_COUNTERS = {
    "samples": ("pipeline_archive_samples", "Samples converted into archive lines."),
    "lines": ("pipeline_archive_lines", "Lines written to finalised archive files."),
    "files": ("pipeline_archive_files", "Archive files finalised (renamed into place)."),
    "dead_letters": ("pipeline_archive_dead_letters", "Messages the archive could not convert (dead-lettered)."),
    "messages": ("pipeline_archive_messages", "Pub/Sub messages archived and acked."),
    "runs": ("pipeline_archive_runs", "Bounded runs finished."),
}
# SinkStats field -> (metric name without _total, help)
SINK_COUNTERS = {
    "requests": ("pipeline_sink_requests", "HTTP requests to the sink, retries included."),
    "samples_sent": ("pipeline_sink_samples_sent", "Samples (float + histogram) the sink accepted (2xx)."),
    "samples_failed": ("pipeline_sink_samples_failed", "Samples in attempts that failed (retried or not)."),
    "samples_retried": ("pipeline_sink_samples_retried", "Samples sent again after a retryable failure."),
    "samples_dead_lettered": ("pipeline_sink_samples_dead_lettered",
                              "Samples the sink refused for good, written to the dead-letter store."),
    "samples_already_delivered": ("pipeline_sink_samples_already_delivered",
                                  "Redelivered samples the sink had already accepted (2xx): not sent again, "
                                  "not dead-lettered."),
    "samples_dropped_by_rules": ("pipeline_sink_samples_dropped_by_rules",
                                 "Samples dropped by the sink's write_relabel_configs."),
    "samples_not_written": ("pipeline_sink_samples_not_written",
                            "Samples a 2.0 sink answered 2xx to but reported not written (*-Written headers)."),
    "metadata_sent": ("pipeline_sink_metadata_sent", "Metadata entries the sink accepted."),
    "protocol_fallbacks": ("pipeline_sink_protocol_fallbacks",
                           "Times a 2.0 sink answered like a 1.x receiver and was switched to 1.0."),
}
PULL_COUNTERS = {
    "answered": ("pipeline_pulls", "Pulls Pub/Sub answered (empty or not)."),
    "messages": ("pipeline_pulled_messages", "Messages pulled (redeliveries included)."),
    "failed_pulls": ("pipeline_pull_failures", "Pulls that failed, including responses too large for the client."),
    "too_large_pulls": ("pipeline_pulls_too_large", "Pull responses too large for the client (see docs/pipeline.md)."),
}


def _histogram(name: str, help_text: str, labels: dict[str, str], buckets: Buckets) -> HistogramMetricFamily:
    cumulative, total = buckets.cumulative()
    family = HistogramMetricFamily(name, help_text, labels=list(labels))
    family.add_metric(list(labels.values()), [("+Inf" if b == float("inf") else repr(float(b)), c)
                                              for b, c in cumulative], total)
    return family


class PipelineCollector(Collector):
    """Reads the running loops' counters at scrape time."""

    def __init__(self, archive: LocalLoop, sinks: Sequence[ForwardLoop], clock: Callable[[], float] = time.time):
        self.archive = archive
        self.sinks = list(sinks)
        self.clock = clock

    def _consumers(self) -> Iterator[tuple[str, str, PullStats, Lease | None]]:
        yield "archive", self.archive.subscription, self.archive.pull_stats, self.archive.lease
        for loop in self.sinks:
            yield loop.sink.name, loop.subscription, loop.pull_stats, loop.lease

    def collect(self) -> Iterator[Metric]:
        totals = dict(self.archive.totals)
        for key, (name, help_text) in ARCHIVE_COUNTERS.items():
            yield CounterMetricFamily(name, help_text, value=totals.get(key, 0))
        yield _histogram("pipeline_bounded_run_duration_seconds",
                         "Wall time of a bounded run, from start to finalised files.", {}, self.archive.run_seconds)

        now = self.clock()
        age = GaugeMetricFamily(
            "pipeline_subscription_oldest_unacked_message_age_seconds",
            "Age of the oldest message this loop pulled and has not acked yet (0 when it holds none): the "
            "backlog's age as the loop sees it.", labels=["subscription", "consumer"])
        pulls = {key: CounterMetricFamily(name, help_text, labels=["subscription", "consumer"])
                 for key, (name, help_text) in PULL_COUNTERS.items()}
        for consumer, subscription, stats, lease in self._consumers():
            age.add_metric([subscription, consumer], lease.backlog_age(now) if lease else 0.0)
            for key, family in pulls.items():
                family.add_metric([subscription, consumer], getattr(stats, key))
        yield age
        yield from pulls.values()

        sink_families = {key: CounterMetricFamily(name, help_text, labels=["sink"])
                         for key, (name, help_text) in SINK_COUNTERS.items()}
        latency = HistogramMetricFamily("pipeline_sink_request_duration_seconds",
                                        "Latency of each HTTP request to the sink.", labels=["sink"])
        for loop in self.sinks:
            stats = loop.forwarder.stats
            with stats.lock:
                counts = dict(stats.counts)
            for key, family in sink_families.items():
                family.add_metric([loop.sink.name], counts.get(key, 0))
            cumulative, total = stats.latency_buckets.cumulative()
            latency.add_metric([loop.sink.name], [("+Inf" if b == float("inf") else repr(float(b)), c)
                                                  for b, c in cumulative], total)
        yield from sink_families.values()
        yield latency


class StatusServer:
    """/metrics, /-/healthy and /-/ready on a loopback port, in a daemon thread."""

    def __init__(self, port: int, registry: CollectorRegistry, readiness: Callable[[], str | None],
                 host: str = METRICS_HOST) -> None:
        self.registry = registry
        self.readiness = readiness
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, generate_latest(owner.registry), CONTENT_TYPE_LATEST)
                elif path == "/-/healthy":
                    self._json(200, {"status": "healthy"})
                elif path == "/-/ready":
                    reason = owner.readiness()
                    if reason:
                        self._json(503, {"status": "not ready", "error": reason})
                    else:
                        self._json(200, {"status": "ready"})
                else:
                    self._json(404, {"error": "not found: try /metrics, /-/healthy or /-/ready"})

            def _json(self, status: int, document: dict[str, str]) -> None:
                # the receiver's answers, so one health check reads both
                self._answer(status, json.dumps(document).encode() + b"\n", "application/json")

            def _answer(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return  # scrapes every few seconds would drown the pipeline's own log

        self.server = http.server.ThreadingHTTPServer((host, port), Handler)  # raises OSError when the port is taken
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="metrics-http")

    def start(self) -> None:
        self.thread.start()
        log.info("metrics on http://%s:%d/metrics (/-/healthy, /-/ready)", METRICS_HOST, self.port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Readiness:
    """Ready once the launcher has checked (or created) every subscription and each loop has pulled once."""

    def __init__(self) -> None:
        self.subscriptions_checked = False
        self.archive: LocalLoop | None = None
        self.sinks: list[ForwardLoop] = []

    def __call__(self) -> str | None:
        if not self.subscriptions_checked or self.archive is None:
            return "checking the input subscription and creating the sinks' subscriptions"
        waiting = [] if self.archive.pull_stats.answered else [self.archive.subscription]
        waiting += [loop.subscription for loop in self.sinks if not loop.pull_stats.answered]
        if waiting:
            return "no successful pull yet from " + ", ".join(waiting)
        return None
