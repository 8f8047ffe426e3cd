"""Pre-built remote-write load and a multi-process HTTP sender.

Every target receives the same bodies. Each sender thread owns a disjoint set of series and
sends its requests in timestamp order, so stores that reject out-of-order samples
(Prometheus) accept all of it.
"""

from __future__ import annotations

import hashlib
import http.client
import multiprocessing
import threading
import time
from urllib.parse import urlparse

from transforms.core.protocol import CONTENT_TYPE_V1, HEADER_VERSION, VERSION_HEADER_V1
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1

SERIES_PER_REQUEST = 1000
GROUPS_PER_STREAM = 4  # distinct 1000-series sets per stream, cycled with rising timestamps
HEADERS = {"Content-Type": CONTENT_TYPE_V1, "Content-Encoding": "snappy", HEADER_VERSION: VERSION_HEADER_V1,
           "User-Agent": "remote-write-bench"}


def _small_labels(stream: int, group: int, i: int) -> dict[str, str]:
    """6 short labels: ~12 KiB per 1000-series request, snappy-compressed."""
    return {"__name__": f"bench_metric_{i % 50}", "job": "bench", "instance": f"host-{stream}-{group}:9100",
            "cpu": str(i // 50), "mode": "user", "stream": str(stream)}


def _node_labels(stream: int, group: int, i: int) -> dict[str, str]:
    """10 node_exporter-like labels: ~44 KiB per 1000-series request, about what Prometheus sends
    with max_samples_per_send: 1000 (a pod hash keeps snappy from folding the values away)."""
    pod = hashlib.blake2b(f"{stream}/{group}/{i}".encode(), digest_size=8).hexdigest()
    return {"__name__": f"node_metric_{i % 50}_total", "job": "node",
            "instance": f"host-{stream}-{group}-{i % 37}.example.internal:9100", "cpu": str(i // 50),
            "mode": ("user", "system", "idle", "iowait")[i % 4], "stream": str(stream),
            "device": f"nvme{i % 7}n{i % 3}", "zone": f"europe-west4-{'abc'[i % 3]}", "pod": f"node-exporter-{pod}"}


# Message shapes the benchmarks and tests send: name -> labels of series i of a group.
SHAPES = {"small": _small_labels, "node": _node_labels}


def build_stream(stream: int, requests: int, start_ms: int, shape: str = "small",
                 series: int = SERIES_PER_REQUEST) -> list[bytes]:
    """Bodies for one sender stream: one sample per series (`series` per request), GROUPS_PER_STREAM
    series sets cycled with rising timestamps; sample values are integers (exact in every store)."""
    labels = SHAPES[shape]
    templates = [build_v1([Series(labels(stream, group, i), [(0, 0.0)]) for i in range(series)])
                 for group in range(GROUPS_PER_STREAM)]
    bodies = []
    for j in range(requests):
        group, round_no = j % GROUPS_PER_STREAM, j // GROUPS_PER_STREAM
        request = templates[group]
        for i, series in enumerate(request.timeseries):
            series.samples[0].timestamp = start_ms + round_no * 1000
            series.samples[0].value = float(round_no * 7 + i)
        bodies.append(codec.encode(request))
    return bodies


def _send_stream(url: str, bodies: list[bytes], deadline: float, results: list, interval: float = 0.0,
                 offset: float = 0.0) -> None:
    """Send `bodies` in order on one connection; with an interval, request j leaves at start + offset +
    j * interval (a paced sender, like Prometheus below saturation), else each as soon as the previous is
    answered."""
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    ok = failed = 0
    statuses: dict[int, int] = {}
    started = time.monotonic()
    for j, body in enumerate(bodies):
        if time.monotonic() > deadline:
            break
        if interval:
            time.sleep(max(0.0, started + offset + j * interval - time.monotonic()))
        conn.request("POST", parsed.path, body=body, headers=HEADERS)
        response = conn.getresponse()
        response.read()
        statuses[response.status] = statuses.get(response.status, 0) + 1
        if 200 <= response.status < 300:
            ok += 1
        else:
            failed += 1
    conn.close()
    results.append((ok, failed, statuses))


def _sender_process(url: str, streams: list[list[bytes]], duration: float, start_at: float, queue,
                    interval: float = 0.0, offsets: list[float] | None = None) -> None:
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = time.monotonic() + duration
    results: list = []
    offsets = offsets or [0.0] * len(streams)
    threads = [threading.Thread(target=_send_stream, args=(url, bodies, deadline, results, interval, offset))
               for bodies, offset in zip(streams, offsets, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put(results)


def stream_offsets(streams_per_process: list[int], interval: float) -> list[list[float]]:
    """Per process, per stream, the delay of its first request: paced streams take turns (stream k of n
    starts k / n of an interval late), so the load arrives at a steady rate, not in bursts of n."""
    total = sum(streams_per_process)
    offsets, k = [], 0
    for count in streams_per_process:
        offsets.append([(k + i) * interval / total for i in range(count)])
        k += count
    return offsets


def run_load(url: str, per_process_streams: list[list[list[bytes]]], duration: float,
             rate: float | None = None) -> dict:
    """Send from one process per entry of per_process_streams for `duration` seconds; with `rate`
    (requests/s in all, spread evenly over every stream) paced, else as fast as answered."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    start_at = time.time() + 0.5
    stream_count = sum(len(streams) for streams in per_process_streams)
    interval = stream_count / rate if rate else 0.0
    offsets = stream_offsets([len(streams) for streams in per_process_streams], interval)
    procs = [ctx.Process(target=_sender_process, args=(url, streams, duration, start_at, queue, interval, starts))
             for streams, starts in zip(per_process_streams, offsets, strict=True)]
    for p in procs:
        p.start()
    results = [r for _ in procs for r in queue.get()]
    elapsed_end = time.time()
    for p in procs:
        p.join()
    ok = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    statuses: dict[int, int] = {}
    for r in results:
        for code, n in r[2].items():
            statuses[code] = statuses.get(code, 0) + n
    elapsed = elapsed_end - start_at
    return {"requests_ok": ok, "requests_failed": failed, "statuses": statuses, "seconds": elapsed,
            "samples_per_second": ok * SERIES_PER_REQUEST / elapsed}
