"""Prometheus 2.42 querying the archive through the reader, against a source Prometheus holding the same data.

The same samples (counters with a reset, a classic histogram, gauges, a series ended by a stale marker, odd
NaNs) go two ways: remote-written into a source Prometheus, and archived as Parquet with the project's own
format code (tests/read_helpers.write_archive, as the pipeline writes it). A second Prometheus with an empty
TSDB and `remote_read: [{url: reader, read_recent: true}]` then answers a set of instant and range PromQL
queries; every answer must equal the source's, value for value (the JSON strings, so NaN compares too).
"""

from __future__ import annotations

import math
import struct
import subprocess
import time
from pathlib import Path

import pytest
import requests
import snappy

from tests.read_helpers import block_chunks, decode_xor_chunk, read_frames, write_archive
from tools import services
from transforms.core.protocol import STALE_NAN, STALE_NAN_BITS
from transforms.core.read.xor import encode_chunk
from transforms.core.wire.builders import Series, build_v1
from transforms.core.wire.proto import remote_read_pb2

STEP_MS = 15_000
SPAN_MS = 40 * 60_000
ODD_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000ABC))[0]
BUCKETS = ("0.05", "0.1", "0.25", "0.5", "1", "+Inf")

QUERIES = [
    'rate(http_requests_total[5m])',
    'increase(http_requests_total{code="200"}[10m])',
    'sum by (job) (rate(http_requests_total[5m]))',
    'http_requests_total{job=~"api|web", code!~"5.."}',
    'http_requests_total{instance!="i0", job!="web"}',
    'avg_over_time(temperature[10m])',
    'histogram_quantile(0.9, sum by (le) (rate(latency_seconds_bucket[5m])))',
    'topk(3, temperature)',
    'count by (job) (up)',
    'absent(nothing_here)',
    'up{job="gone"}',
    'odd_values',
]


def _series(start_ms: int) -> list[Series]:
    stamps = [start_ms + i * STEP_MS for i in range(SPAN_MS // STEP_MS)]
    out = []
    for job_number, job in enumerate(("api", "web", "batch")):
        for instance in range(4):
            for code in ("200", "500"):
                total, points = 0.0, []
                for i, t in enumerate(stamps):
                    total = 0.0 if (job == "web" and instance == 1 and i == 60) else \
                        total + (job_number + 1) * (instance + 1) * (3 if code == "200" else 0.25)
                    points.append((t, total))
                out.append(Series({"__name__": "http_requests_total", "job": job, "instance": f"i{instance}",
                                   "code": code}, points))
            out.append(Series({"__name__": "temperature", "job": job, "instance": f"i{instance}"},
                              [(t, 20 + job_number + instance * 0.5 + math.sin(i / 7)) for i, t in enumerate(stamps)]))
            out.append(Series({"__name__": "up", "job": job, "instance": f"i{instance}"}, [(t, 1.0) for t in stamps]))
    counts = {le: 0.0 for le in BUCKETS}
    bucket_points: dict[str, list[tuple[int, float]]] = {le: [] for le in BUCKETS}
    for i, t in enumerate(stamps):
        for rank, le in enumerate(BUCKETS):
            counts[le] += (rank + 1) * (1 + i % 5)
            bucket_points[le].append((t, counts[le]))
    out += [Series({"__name__": "latency_seconds_bucket", "job": "api", "le": le}, bucket_points[le]) for le in BUCKETS]
    half = len(stamps) // 2
    out.append(Series({"__name__": "up", "job": "gone", "instance": "i9"},
                      [(t, 1.0) for t in stamps[:half]] + [(stamps[half], STALE_NAN)]))
    out.append(Series({"__name__": "odd_values", "job": "x"},
                      [(t, [ODD_NAN, math.inf, -math.inf, float("nan"), 1.5][i % 5]) for i, t in enumerate(stamps)]))
    return out


def _query(url: str, query: str, **params) -> list:
    path = "query_range" if "start" in params else "query"
    answer = requests.get(f"{url}/api/v1/{path}", params={"query": query, **params}, timeout=60).json()
    assert answer["status"] == "success", (query, answer)
    return sorted(answer["data"]["result"], key=lambda r: sorted(r["metric"].items()))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("reader-prometheus")
    start_ms = (int(time.time() * 1000) // 60_000) * 60_000 - SPAN_MS - 5 * 60_000
    request = build_v1(_series(start_ms))
    archive = log_dir / "archive"
    files = write_archive(archive, request, counter_names={"http_requests_total": "counter"})
    source, source_url = services.start_prometheus(log_dir, "global: {scrape_interval: 1m}\n", receiver=True,
                                                   name="source-prometheus", args=["--web.enable-admin-api"])
    reader, reader_url = services.start_reader(log_dir, str(archive))
    config = f"""
global: {{scrape_interval: 1m}}
remote_read:
  - url: {reader_url}/api/v1/read
    read_recent: true
"""
    reading, reading_url = services.start_prometheus(log_dir, config, name="reading-prometheus")
    try:
        body = snappy.compress(request.SerializeToString())
        answer = requests.post(f"{source_url}/api/v1/write", data=body, timeout=60, headers={
            "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0"})
        assert answer.status_code == 204, answer.text
        yield {"source": source_url, "reading": reading_url, "reader": reader_url, "start": start_ms,
               "files": files, "source_service": source}
    finally:
        for service in (reading, reader, source):
            service.stop()


def test_archive_spans_hour_partitions(stack):
    assert stack["files"], "nothing archived"
    assert all(path.suffix == ".parquet" for path in stack["files"])


@pytest.mark.parametrize("query", QUERIES)
def test_instant_queries_match_the_source(stack, query):
    for offset_min in (12, 25, SPAN_MS // 60_000 - 1, SPAN_MS // 60_000 + 3):
        moment = (stack["start"] + offset_min * 60_000) / 1000
        expected = _query(stack["source"], query, time=moment)
        assert _query(stack["reading"], query, time=moment) == expected, (query, offset_min)


@pytest.mark.parametrize("query", QUERIES)
def test_range_queries_match_the_source(stack, query):
    params = {"start": stack["start"] / 1000, "end": (stack["start"] + SPAN_MS + 6 * 60_000) / 1000, "step": "30s"}
    expected = _query(stack["source"], query, **params)
    assert expected or query.startswith("absent"), f"the source answers nothing for {query}"
    assert _query(stack["reading"], query, **params) == expected, query


def test_stale_series_ends_at_its_marker(stack):
    half_ms = stack["start"] + (SPAN_MS // STEP_MS // 2) * STEP_MS
    before = _query(stack["reading"], 'up{job="gone"}', time=(half_ms - 1000) / 1000)
    after = _query(stack["reading"], 'up{job="gone"}', time=(half_ms + 1000) / 1000)
    assert len(before) == 1 and after == []


def test_reader_counts_what_it_served(stack):
    text = requests.get(f"{stack['reader']}/metrics", timeout=10).text
    served = [line for line in text.splitlines() if line.startswith("reader_samples_returned_total")]
    assert served and float(served[0].split()[-1]) > 0


def test_xor_chunks_equal_prometheus_own(stack):
    """Prometheus 2.42 has no client for STREAMED_XOR_CHUNKS, so the encoder is held to Prometheus' own XOR
    chunks instead: snapshot the source's TSDB into a block, decode each chunk (the tests' decoder) and
    encode its samples again; the bytes must be Prometheus' bytes exactly."""
    answer = requests.post(f"{stack['source']}/api/v1/admin/tsdb/snapshot", timeout=60).json()
    data_dir = next(a for a in stack["source_service"].process.args if a.startswith("--storage.tsdb.path="))
    snapshot = Path(data_dir.split("=", 1)[1]) / "snapshots" / answer["data"]["name"]
    chunks = [data for block in snapshot.iterdir() for encoding, data in block_chunks(block) if encoding == 1]
    assert len(chunks) >= len(_series(0)), "every series has at least one XOR chunk"
    seen_stale = False
    for data in chunks:
        points = decode_xor_chunk(data)
        seen_stale = seen_stale or any(bits == STALE_NAN_BITS for _, bits in points)
        assert encode_chunk([t for t, _ in points], [bits for _, bits in points]) == data
    assert seen_stale


def test_streamed_chunks_come_over_http_as_a_chunked_body(stack):
    """Through gunicorn, a STREAMED_XOR_CHUNKS answer is a chunked HTTP body (frames sent as encoded, no
    Content-Length), and its chunks hold exactly the samples of the SAMPLES answer."""
    query = remote_read_pb2.Query(start_timestamp_ms=stack["start"], end_timestamp_ms=stack["start"] + SPAN_MS,
                                  matchers=[remote_read_pb2.LabelMatcher(type=2, name="__name__", value=".+")])
    answers = {}
    for kind in (remote_read_pb2.ReadRequest.SAMPLES, remote_read_pb2.ReadRequest.STREAMED_XOR_CHUNKS):
        body = remote_read_pb2.ReadRequest(queries=[query], accepted_response_types=[kind]).SerializeToString()
        answers[kind] = requests.post(f"{stack['reader']}/api/v1/read", data=snappy.compress(body), timeout=60,
                                      headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"})
    streamed = answers[remote_read_pb2.ReadRequest.STREAMED_XOR_CHUNKS]
    assert streamed.status_code == 200 and streamed.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in streamed.headers
    chunked = [(tuple((lb.name, lb.value) for lb in series.labels),
                [point for chunk in series.chunks for point in decode_xor_chunk(chunk.data)])
               for frame in read_frames(streamed.content) for series in frame.chunked_series]
    (result,) = remote_read_pb2.ReadResponse.FromString(
        snappy.decompress(answers[remote_read_pb2.ReadRequest.SAMPLES].content)).results
    assert chunked == [(tuple((lb.name, lb.value) for lb in series.labels),
                        [(s.timestamp, struct.unpack("<Q", struct.pack("<d", s.value))[0]) for s in series.samples])
                       for series in result.timeseries]
    assert len(chunked) == len(_series(0))


def test_a_limit_reaches_the_prometheus_user(stack, tmp_path):
    archive = str(stack["files"][0].parents[3])
    reader, reader_url = services.start_reader(tmp_path, archive, args=["--max-samples-per-query=100"])
    config = f"remote_read:\n  - url: {reader_url}/api/v1/read\n    read_recent: true\n"
    reading, reading_url = services.start_prometheus(tmp_path, config, name="limited-prometheus")
    try:
        moment = (stack["start"] + 20 * 60_000) / 1000
        answer = requests.get(f"{reading_url}/api/v1/query", timeout=60,
                              params={"query": "http_requests_total", "time": moment}).json()
        said = answer.get("error", "") + " ".join(answer.get("warnings", []))
        assert "--max-samples-per-query" in said and "422" in said, answer
        small = requests.get(f"{reading_url}/api/v1/query", timeout=60, params={
            "query": 'http_requests_total{job="api", instance="i0", code="200"}', "time": moment}).json()
        assert small["status"] == "success" and len(small["data"]["result"]) == 1, small
    finally:
        reading.stop()
        reader.stop()


def _write(url: str, series: list[Series]) -> None:
    answer = requests.post(f"{url}/api/v1/write", data=snappy.compress(build_v1(series).SerializeToString()),
                           timeout=60, headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                                                "X-Prometheus-Remote-Write-Version": "0.1.0"})
    assert answer.status_code == 204, answer.text


def test_local_recent_data_and_archived_older_hours_join_without_gaps(stack, tmp_path):
    """A Prometheus holding only the last part of the data in its TSDB, with the reader for older times
    (`read_recent: false`, the default): range queries across the boundary equal the source's. The archive
    holds everything, as in production, so the overlap must not be counted twice."""
    boundary = stack["start"] + 25 * 60_000
    recent = [Series(s.labels, [(t, v) for t, v in s.samples if t >= boundary]) for s in _series(stack["start"])]
    config = f"remote_read:\n  - url: {stack['reader']}/api/v1/read\n"
    mixed, mixed_url = services.start_prometheus(tmp_path, config, receiver=True, name="mixed-prometheus")
    try:
        _write(mixed_url, [s for s in recent if s.samples])
        params = {"start": stack["start"] / 1000, "end": (stack["start"] + SPAN_MS) / 1000, "step": "15s"}
        for query in ('sum by (job) (rate(http_requests_total[5m]))', 'increase(http_requests_total[10m])',
                      'count_over_time(temperature[3m])', 'up'):
            expected = _query(stack["source"], query, **params)
            assert expected and _query(mixed_url, query, **params) == expected, query
        local_only = _query(mixed_url, "up", time=(boundary + 60_000) / 1000)
        assert local_only == _query(stack["source"], "up", time=(boundary + 60_000) / 1000)
    finally:
        mixed.stop()


def test_prometheus_reads_over_tls_with_a_bearer_token(stack, tmp_path):
    cert, key, token = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "token"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    token.write_text("read-token\n")
    archive = str(stack["files"][0].parents[3])
    reader, reader_url = services.start_reader(tmp_path, archive, args=[
        "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--bearer-token-file", str(token)])
    config = f"""
remote_read:
  - url: {reader_url}/api/v1/read
    read_recent: true
    authorization: {{credentials_file: {token}}}
    tls_config: {{ca_file: {cert}}}
"""
    reading, reading_url = services.start_prometheus(tmp_path, config, name="tls-prometheus")
    try:
        assert reader_url.startswith("https://")
        assert requests.post(f"{reader_url}/api/v1/read", data=b"", verify=str(cert), timeout=10).status_code == 401
        moment = (stack["start"] + 20 * 60_000) / 1000
        query = 'sum by (job) (rate(http_requests_total[5m]))'
        expected = _query(stack["source"], query, time=moment)
        assert expected and _query(reading_url, query, time=moment) == expected
    finally:
        reading.stop()
        reader.stop()
