"""The data of `make bench-query`, generated deterministically: targets scraped every 15 s for a span.

Each target (job, instance) exposes 20 series: `up`, six `http_requests_total{method, code}` counters, a
classic histogram `request_duration_seconds` (8 `_bucket{le}` series, `_sum`, `_count`), the gauge
`process_resident_memory_bytes` and two `node_temperature_celsius{sensor}` gauges. Every seventh instance
restarts a third of the way in (its counters reset). The targets of job `batch` disappear before the
instant-query moment: each of their series ends with a Prometheus stale marker, as Prometheus writes when a
target goes away. Values depend only on the seed and the sizes; the time anchor is a parameter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from transforms.core.protocol import STALE_NAN
from transforms.core.wire import snappy_block
from transforms.core.wire.proto import remote_v1_pb2

JOBS = ("api", "web", "db", "cache", "batch")
STALE_JOB = "batch"
BUCKETS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "1", "+Inf")
SERIES_PER_TARGET = 20
STEP_MS = 15_000
TYPES = {"up": "gauge", "http_requests_total": "counter", "request_duration_seconds": "histogram",
         "process_resident_memory_bytes": "gauge", "node_temperature_celsius": "gauge"}
_REQUESTS = [(method, code, share) for method, base in (("GET", 1.0), ("POST", 0.3))
             for code, share in (("200", base), ("404", base * 0.05), ("500", base * 0.01))]


@dataclasses.dataclass(frozen=True)
class Workload:
    start_ms: int  # the first scrape
    steps: int  # scrapes per series
    targets_per_job: int
    step_ms: int = STEP_MS
    seed: int = 22

    @classmethod
    def of(cls, series: int, minutes: float, start_ms: int, step_ms: int = STEP_MS) -> Workload:
        """About `series` series (whole targets, at least one per job) over `minutes`."""
        per_job = max(1, round(series / SERIES_PER_TARGET / len(JOBS)))
        return cls(start_ms, max(2, int(minutes * 60_000 // step_ms)), per_job, step_ms)

    @property
    def span_ms(self) -> int:
        return self.steps * self.step_ms

    @property
    def end_ms(self) -> int:
        """Just after the last scrape: [start_ms, end_ms) holds every sample."""
        return self.start_ms + self.span_ms

    @property
    def instant_ms(self) -> int:
        """Where the instant queries are evaluated: three quarters in, on a scrape."""
        return self.start_ms + (self.steps * 3 // 4) * self.step_ms

    @property
    def stale_step(self) -> int:
        """The scrape at which job `batch`'s series get their stale marker: two minutes before the instant, so
        an instant query finds the marker within its 5-minute lookback (without it, the series would show)."""
        return max(1, (self.instant_ms - 120_000 - self.start_ms) // self.step_ms)

    def labels(self) -> list[dict[str, str]]:
        out = []
        for job_number, job in enumerate(JOBS):
            for n in range(self.targets_per_job):
                target = {"job": job, "instance": f"10.{job_number}.{n // 250}.{n % 250}:9100"}
                out.append({"__name__": "up", **target})
                out += [{"__name__": "http_requests_total", **target, "method": method, "code": code}
                        for method, code, _ in _REQUESTS]
                out += [{"__name__": "request_duration_seconds_bucket", **target, "le": le} for le in BUCKETS]
                out += [{"__name__": "request_duration_seconds_sum", **target},
                        {"__name__": "request_duration_seconds_count", **target},
                        {"__name__": "process_resident_memory_bytes", **target}]
                out += [{"__name__": "node_temperature_celsius", **target, "sensor": str(s)} for s in range(2)]
        return out

    def values(self) -> np.ndarray:
        """float64 [series, steps], in the order of labels()."""
        rng = np.random.default_rng(self.seed)
        targets = len(JOBS) * self.targets_per_job
        out = np.empty((targets * SERIES_PER_TARGET, self.steps))
        restart = self.steps // 3
        phase = np.arange(self.steps)
        for t in range(targets):
            rows = out[t * SERIES_PER_TARGET:(t + 1) * SERIES_PER_TARGET]
            restarts = (t % self.targets_per_job) % 7 == 3

            def cumulative(increments: np.ndarray, restarts: bool = restarts) -> np.ndarray:
                if restarts:  # the process restarted: its counters begin again from the increments after it
                    return np.concatenate([np.cumsum(increments[..., :restart], -1),
                                           np.cumsum(increments[..., restart:], -1)], -1)
                return np.cumsum(increments, -1)

            rows[0] = 1.0
            rate = rng.uniform(0.5, 40.0)
            for i, (_, _, share) in enumerate(_REQUESTS):
                rows[1 + i] = cumulative(rng.poisson(rate * share * self.step_ms / 1000, self.steps).astype(float))
            # classic histogram: per scrape, `observed` requests spread over the buckets by an exponential
            # latency distribution (cumulative by le, so the counts grow with le and the +Inf one equals _count)
            mean = rng.uniform(0.01, 0.3)
            observed = rng.poisson(rate * self.step_ms / 1000, self.steps).astype(float)
            bounds = np.array([float(le) for le in BUCKETS])
            shares = 1.0 - np.exp(-bounds / mean)
            rows[7:15] = cumulative(np.floor(observed[None, :] * shares[:, None]))
            rows[15] = cumulative(np.round(observed * mean * rng.uniform(0.8, 1.2, self.steps), 3))
            rows[16] = cumulative(observed)
            rows[17] = np.round(2e8 + np.cumsum(rng.normal(0, 1e6, self.steps)))
            for s in range(2):
                rows[18 + s] = np.round(45 + 10 * np.sin(phase / 40 + t + s) + rng.normal(0, 0.5, self.steps), 2)
        return out

    def active(self, labels: list[dict[str, str]], step: int) -> list[int]:
        """The series scraped at `step` (job batch's end at their stale marker)."""
        return [i for i, series in enumerate(labels) if series["job"] != STALE_JOB or step <= self.stale_step]

    def samples(self) -> int:
        """Every sample written, stale markers included."""
        targets = len(JOBS) * self.targets_per_job
        stale_series = self.targets_per_job * SERIES_PER_TARGET
        return targets * SERIES_PER_TARGET * self.steps - stale_series * (self.steps - 1 - self.stale_step)

    def bodies(self) -> Iterator[tuple[int, bytes]]:
        """(timestamp ms, snappy remote-write 1.0 body) per scrape, oldest first, as Prometheus sends them."""
        labels = self.labels()
        values = self.values()
        templates: dict[int, tuple[remote_v1_pb2.WriteRequest, list[int]]] = {}
        for step in range(self.steps):
            rows = self.active(labels, step)
            request, _ = templates.setdefault(len(rows), (_template(labels, rows), rows))
            stamp = self.start_ms + step * self.step_ms
            column = values[rows, step].tolist()
            if step == self.stale_step:
                for i, row in enumerate(rows):
                    if labels[row]["job"] == STALE_JOB:
                        column[i] = STALE_NAN
            for series, value in zip(request.timeseries, column, strict=True):
                sample = series.samples[0]
                sample.value = value
                sample.timestamp = stamp
            yield stamp, snappy_block.compress(request.SerializeToString())


def _template(labels: list[dict[str, str]], rows: list[int]) -> remote_v1_pb2.WriteRequest:
    """A request holding `rows`' series with one sample each, filled in per scrape (building 10,000 series'
    labels once instead of once per scrape)."""
    request = remote_v1_pb2.WriteRequest()
    for row in rows:
        series = request.timeseries.add()
        series.labels.extend(remote_v1_pb2.Label(name=k, value=v) for k, v in sorted(labels[row].items()))
        series.samples.add()
    return request
