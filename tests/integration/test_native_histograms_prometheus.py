"""Native histograms into a real Prometheus 2.42 (--enable-feature=native-histograms, remote-write receiver):
sent to our receiver, published to the Pub/Sub emulator, forwarded by the local runner's sink loop (and, in
the second test, archived and sent again by `pipeline.restore`), then read back from Prometheus' query API
and compared field by field with what was sent.

Compared exactly: each sample's timestamp, count and sum, and every bucket (boundary rule, lower and upper
bound, count) derived from the sent schema, spans, deltas/counts and zero bucket (tests/histogram_helpers.py);
integer and float histograms, positive and negative spans, the zero bucket. Stale markers: Prometheus hides
them from range queries, so they are checked by their effect (an instant query just after the marker finds
nothing, while a series without a marker is still visible within the lookback).

Read back one series per query: Prometheus 2.42 answers a range query that selects several native-histogram
series with one series' values repeated for others (seen here: 20 of 40 series wrong, the same when the
histograms are written straight to Prometheus without us); a query per series answers right.

Not comparable here: reset hints. Prometheus 2.42 takes them on ingestion but shows them in no API answer
(the query API has no field for them, and 2.42's functions over histograms do not expose them); the test
sends every hint (UNKNOWN, YES, NO, GAUGE) and checks that each such sample is stored with its counts."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import apache_beam as beam
import pytest
import requests
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions

from tests.histogram_helpers import (
    api_buckets,
    expected_buckets,
    histogram_count,
    make_histogram,
    same_buckets,
    stale_histogram,
)
from tests.sink_helpers import BASE_MS, forwarding, sink, wait_for
from tools import services
from transforms.beam import ArchiveMessages
from transforms.core.protocol import CONTENT_TYPE_V1, HEADER_VERSION, VERSION_HEADER_V1, Protocol
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1

SERIES = 40  # half integer, half float histograms
STEPS = 6  # samples per series, one per request, a second apart
STALE_EVERY = 4  # series i % STALE_EVERY == 0 end with a stale marker


@pytest.fixture(scope="module")
def prometheus_native(log_dir) -> Iterator[str]:
    service, url = services.start_prometheus(log_dir, "global: {}\n", receiver=True, name="prom-native",
                                             args=["--enable-feature=native-histograms"])
    yield url
    service.stop()


def name_of(i: int) -> str:
    return "nh_float_seconds" if i % 2 else "nh_int_seconds"


def requests_to_send() -> tuple[list, dict[tuple, list]]:
    """One request per step (every series one histogram), then one with the stale markers; and what each
    series was sent, without the markers."""
    sent: dict[tuple, list] = {}
    out = []
    for step in range(STEPS):
        request = build_v1([Series({"__name__": name_of(i), "i": str(i), "job": "nhtest"}) for i in range(SERIES)])
        for i, series in enumerate(request.timeseries):
            h = make_histogram(i, step, BASE_MS + step * 1000, floats=bool(i % 2))
            series.histograms.append(h)
            sent.setdefault((("__name__", name_of(i)), ("i", str(i)), ("job", "nhtest")), []).append(h)
        out.append(request)
    stale = build_v1([Series({"__name__": name_of(i), "i": str(i), "job": "nhtest"})
                      for i in range(0, SERIES, STALE_EVERY)])
    for series in stale.timeseries:
        series.histograms.append(stale_histogram(BASE_MS + STEPS * 1000))
    out.append(stale)
    return out, sent


def post(receiver_url: str, request) -> None:
    response = requests.post(f"{receiver_url}/api/v1/write", data=codec.encode(request), timeout=30, headers={
        "Content-Encoding": "snappy", "Content-Type": CONTENT_TYPE_V1, HEADER_VERSION: VERSION_HEADER_V1})
    assert response.status_code == 204, response.text


def query(url: str, expr: str, at: float) -> list:
    answer = requests.get(f"{url}/api/v1/query", params={"query": expr, "time": at}, timeout=30).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_native_histograms_reach_prometheus_field_by_field(topic_and_subscription, pubsub_emulator, log_dir,
                                                           prometheus_native, tmp_path):
    topic, _ = topic_and_subscription
    to_send, sent = requests_to_send()
    total = SERIES * STEPS + len(range(0, SERIES, STALE_EVERY))
    receiver, receiver_url = services.start_receiver(log_dir, pubsub_emulator, topic, name="receiver-nh")
    try:
        with forwarding(topic, [sink(f"{prometheus_native}/api/v1/write")], tmp_path / "dead") as (loop,):
            for request in to_send:
                post(receiver_url, request)
            wait_for(lambda: loop.forwarder.stats.snapshot()["samples_sent"] == total, 60,
                     "the sink loop delivered every histogram sample")
            stats = loop.forwarder.stats.snapshot()
    finally:
        receiver.stop()
    assert stats["samples_dead_lettered"] == 0 and not (tmp_path / "dead").exists()
    assert_prometheus_holds(prometheus_native, sent)


def assert_prometheus_holds(url: str, sent: dict[tuple, list]) -> None:
    """Every sent histogram field by field, and the stale markers by their effect."""
    names = {r["metric"]["i"] for r in query(url, 'count_over_time({job="nhtest"}[1h])', time.time())}
    assert names == {str(i) for i in range(SERIES)}
    for key, histograms in sent.items():
        selector = "{" + ",".join(f'{name}="{value}"' for name, value in key) + "}[1h]"
        (row,) = query(url, selector, time.time())  # one series per query: see the docstring
        got = row["histograms"]
        assert [round(float(t) * 1000) for t, _ in got] == [h.timestamp for h in histograms], key
        for h, (_, value) in zip(histograms, got, strict=True):
            assert float(value["count"]) == histogram_count(h), key
            assert float(value["sum"]) == h.sum, key
            assert same_buckets(api_buckets(value), expected_buckets(h)), (key, value["buckets"], expected_buckets(h))
    kinds = {h.WhichOneof("count") for hs in sent.values() for h in hs}
    hints = {h.reset_hint for hs in sent.values() for h in hs}
    assert kinds == {"count_int", "count_float"} and len(hints) == 4  # the test covers what it says it covers

    marker_s = (BASE_MS + STEPS * 1000) / 1000
    after = {r["metric"]["i"] for r in query(url, '{job="nhtest"}', marker_s + 5)}
    before = {r["metric"]["i"] for r in query(url, '{job="nhtest"}', marker_s - 0.5)}
    assert before == {str(i) for i in range(SERIES)}
    assert after == {str(i) for i in range(SERIES) if i % STALE_EVERY}, "stale markers end their series at once"


def test_native_histograms_restored_from_the_archive_reach_prometheus_field_by_field(log_dir, tmp_path):
    """The same histograms archived by the pipeline's own writer (NDJSON and Parquet), then sent by
    `python -m pipeline.restore` into a fresh Prometheus."""
    service, url = services.start_prometheus(log_dir, "global: {}\n", receiver=True, name="prom-native-restore",
                                             args=["--enable-feature=native-histograms"])
    try:
        to_send, sent = requests_to_send()
        archive = str(tmp_path / "archive")
        for fmt, part in (("ndjson", to_send[:STEPS // 2]), ("parquet", to_send[STEPS // 2:])):
            messages = [PubsubMessage(codec.encode(r), codec.message_attributes(Protocol.V1, "team-h", "x",
                                                                                codec.count(r)), message_id=f"{fmt}{n}")
                        for n, r in enumerate(part)]
            with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
                _ = p | beam.Create(messages) | ArchiveMessages(archive, archive + "/_dead", archive_format=fmt,
                                                                file_label=lambda window, pane, fmt=fmt: fmt)
        done = subprocess.run([sys.executable, "-m", "pipeline.restore", f"--archive_path={archive}",
                               f"--remote_write_url={url}/api/v1/write"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "0 dead-lettered" in done.stdout, done.stdout
        assert_prometheus_holds(url, sent)
    finally:
        service.stop()
