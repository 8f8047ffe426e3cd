"""The queries of `make bench-query`, how each backend is timed, and how the answers are compared.

Per query and kind (instant, range), every backend in turn (so the shared machine's drift spreads over all
of them): one warm-up run, whose answer is kept for the comparison, then `reps` timed runs. Latency is
the client's wall-clock time from sending the request to the last byte of the answer (JSON parsing is
not timed). CPU is the utime + stime of the serving processes' trees (/proc) across the timed runs, per
query; for the reader, bytes read per query come from its own `reader_bytes_read_total`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from typing import Any

import numpy as np
import requests

from bench.proc_cpu import snapshot, tree_cpu_seconds
from tools import services

QUERIES = {
    "rate": "rate(http_requests_total[5m])",
    "increase": 'increase(http_requests_total{code="500"}[10m])',
    "sum by": "sum by (job) (rate(http_requests_total[5m]))",
    "avg_over_time": "avg_over_time(node_temperature_celsius[10m])",
    "histogram_quantile": "histogram_quantile(0.9, sum by (job, le) (rate(request_duration_seconds_bucket[5m])))",
    "topk": "topk(5, process_resident_memory_bytes)",
    "absent": 'absent(nonexistent_metric{job="api"})',
    "count by job": "count by (job) (up)",
    "regex matcher": 'http_requests_total{job=~"api|web", code=~"5.."}',
    "stale series": 'up{job="batch"}',
}
KINDS = ("instant", "range")
READER_COUNTERS = ("reader_bytes_read_total", "reader_files_read_total", "reader_rows_read_total")


@dataclasses.dataclass
class Backend:
    name: str
    url: str  # where its PromQL HTTP API answers
    pids: list[int]  # roots of the process trees whose CPU is counted
    reader_url: str | None = None  # the reader behind it, for its counters
    exact: bool = True  # must answer exactly as the reference (Prometheus' own PromQL engine)


@dataclasses.dataclass
class Figure:
    backend: str
    query: str
    kind: str
    p50_ms: float
    p99_ms: float
    cpu_ms: float  # per query
    series: int  # in the answer
    bytes_read: float | None = None  # per query, readers only
    files_read: float | None = None
    rows_read: float | None = None
    agrees: bool | None = None  # with the reference backend; None for the reference itself
    difference: str = ""


def params(kind: str, instant_ms: int, start_ms: int, end_ms: int, step_s: int) -> dict[str, Any]:
    if kind == "instant":
        return {"time": instant_ms / 1000}
    return {"start": start_ms / 1000, "end": end_ms / 1000, "step": f"{step_s}s"}


def fetch(session: requests.Session, backend: Backend, kind: str, promql: str, query_params: dict) -> bytes:
    path = "query" if kind == "instant" else "query_range"
    answer = session.get(f"{backend.url}/api/v1/{path}", params={"query": promql, **query_params}, timeout=600)
    if answer.status_code != 200:
        raise RuntimeError(f"{backend.name}: {promql} answered {answer.status_code}: {answer.text[:500]}")
    return answer.content


def result_of(backend: Backend, promql: str, body: bytes) -> list[dict]:
    """The answer's series sorted by labels; a warning (e.g. a remote-read limit) fails the benchmark, since
    Prometheus then answers with what it has, which would look like a fast complete answer."""
    answer = json.loads(body)
    if answer.get("status") != "success" or answer.get("warnings"):
        raise RuntimeError(f"{backend.name}: {promql}: {str(answer)[:500]}")
    return sorted(answer["data"]["result"], key=lambda r: sorted(r["metric"].items()))


def points(series: dict) -> list[tuple[float, str]]:
    return [tuple(p) for p in series["values"]] if "values" in series else [tuple(series["value"])]


def difference(reference: list[dict], other: list[dict], exact: bool) -> str:
    """'' when the answers agree: the same series, timestamps and values; NaN equals NaN. Exact compares the
    value strings as Prometheus formats them; otherwise values may differ by a relative 1e-9."""
    if [r["metric"] for r in reference] != [o["metric"] for o in other]:
        if len(reference) != len(other):
            return f"{len(reference)} vs {len(other)} series"
        first = next((r["metric"], o["metric"]) for r, o in zip(reference, other, strict=True)
                     if r["metric"] != o["metric"])
        return f"series differ ({first[0]} vs {first[1]})"
    worst, count = 0.0, 0
    for ref, oth in zip(reference, other, strict=True):
        a, b = points(ref), points(oth)
        if [t for t, _ in a] != [t for t, _ in b]:
            return f"timestamps differ in {ref['metric']}"
        for (_, x), (_, y) in zip(a, b, strict=True):
            if x == y:
                continue
            fx, fy = float(x), float(y)
            if math.isnan(fx) and math.isnan(fy):
                continue
            finite = math.isfinite(fx) and math.isfinite(fy)  # else NaN against a number, or an infinity
            gap = abs(fx - fy) / max(abs(fx), abs(fy), 1e-300) if finite else math.inf
            if exact or gap > 1e-9:
                count += 1
                worst = max(worst, gap)
    return f"{count} values differ (largest relative difference {worst:.3g})" if count else ""


def reader_counters(url: str) -> dict[str, float]:
    _, body = services.http_get(f"{url}/metrics", timeout=10)
    text = body.decode()
    return {name: sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))
            for name in READER_COUNTERS}


def cpu_seconds(backend: Backend) -> float:
    stats = snapshot()
    return sum(tree_cpu_seconds(pid, stats) for pid in backend.pids)


def measure_one(session: requests.Session, backend: Backend, name: str, kind: str, query_params: dict,
                reps: int) -> tuple[Figure, list[dict]]:
    promql = QUERIES[name]
    result = result_of(backend, promql, fetch(session, backend, kind, promql, query_params))  # warm-up
    before = reader_counters(backend.reader_url) if backend.reader_url else {}
    cpu_before = cpu_seconds(backend)
    latencies = []
    for _ in range(reps):
        started = time.perf_counter()
        fetch(session, backend, kind, promql, query_params)
        latencies.append(time.perf_counter() - started)
    cpu = (cpu_seconds(backend) - cpu_before) / reps
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    figure = Figure(backend.name, name, kind, round(float(p50), 1), round(float(p99), 1), round(cpu * 1000, 1),
                    len(result))
    if backend.reader_url:
        after = reader_counters(backend.reader_url)
        figure.bytes_read, figure.files_read, figure.rows_read = (
            (after[c] - before[c]) / reps for c in READER_COUNTERS)
    return figure, result


def measure(backends: list[Backend], instant_ms: int, start_ms: int, end_ms: int, step_s: int, reps: int,
            progress: bool = True) -> list[Figure]:
    """Every query x kind on every backend; the first backend is the reference the others are compared with."""
    figures = []
    with requests.Session() as session:
        for name in QUERIES:
            for kind in KINDS:
                query_params = params(kind, instant_ms, start_ms, end_ms, step_s)
                results = []
                for backend in backends:
                    figure, result = measure_one(session, backend, name, kind, query_params, reps)
                    if results:
                        figure.difference = difference(results[0], result, backend.exact)
                        figure.agrees = not figure.difference
                    results.append(result)
                    figures.append(figure)
                    if progress:
                        print(json.dumps(dataclasses.asdict(figure)), flush=True)
    return figures
