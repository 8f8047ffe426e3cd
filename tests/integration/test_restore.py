"""`python -m pipeline.restore` as a user runs it, against an archive the pipeline's own writers produced
(NDJSON and Parquet mixed, two tenants, two hours), delivering to a capture server that records what a
remote-write peer sees; plus bad input, a refusing sink, and archives on GCS and S3."""

from __future__ import annotations

import gzip
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions

from tests.sink_helpers import Capture
from transforms.beam import ArchiveMessages
from transforms.core.protocol import STALE_NAN, STALE_NAN_BITS, Protocol, float_bits, ref_pairs
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1, build_v2
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2

HOUR = 3_600_000
T8 = 1_795_593_600_000  # 2026-11-25T08:00:00Z


def histogram_request(ts: int) -> remote_v1_pb2.WriteRequest:
    request = build_v1([Series({"__name__": "latency", "job": "api"},
                               exemplars=[({"trace_id": "t-1"}, ts + 5, 0.3)])])
    request.timeseries[0].histograms.add(count_int=3, sum=1.25, schema=1, zero_count_int=1, timestamp=ts,
                                         positive_spans=[{"offset": 0, "length": 2}], positive_deltas=[1, 0])
    return request


def write(archive: str, fmt: str, label: str, requests: list[tuple[remote_v1_pb2.WriteRequest, str]],
          extra: tuple[str, ...] = ()) -> None:
    messages = [PubsubMessage(codec.encode(m), codec.message_attributes(Protocol.V1, t, "x", codec.count(m)),
                              message_id=f"{label}-{i}") for i, (m, t) in enumerate(requests)]
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", *extra])) as p:
        _ = p | beam.Create(messages) | ArchiveMessages(archive, archive + "/_dead", archive_format=fmt,
                                                        file_label=lambda window, pane: label)


def build_archive(archive: str, extra: tuple[str, ...] = ()) -> None:
    """Series `walk` of team-a spans hour 08 (NDJSON) and 09 (Parquet + NDJSON, interleaved in time)."""
    walk = {"__name__": "walk_total", "job": "api"}
    write(archive, "ndjson", "a", [
        (build_v1([Series(walk, [(T8 + HOUR - 2000, 1.0), (T8 + HOUR - 1000, 2.0)])],
                  metadata=[Series({"__name__": "walk_total"}, metric_type="counter")]), "team-a"),
        (build_v1([Series(walk, [(T8 + HOUR + 1000, 4.0), (T8 + HOUR + 3000, 6.0)])],
                  metadata=[Series({"__name__": "walk_total"}, metric_type="counter")]), "team-a"),
        (build_v1([Series({"__name__": "up", "job": "b"}, [(T8 + HOUR, 1.0), (T8 + HOUR + 1000, STALE_NAN)])]),
         "team-b"),
    ], extra)
    write(archive, "parquet", "b", [
        (build_v1([Series(walk, [(T8 + HOUR + 2000, 5.0), (T8 + HOUR, 3.0)])],  # each bundle knows its types
                  metadata=[Series({"__name__": "walk_total"}, metric_type="counter")]), "team-a"),
        (histogram_request(T8 + HOUR + 500), "team-a"),
    ], extra)


def restore(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.restore", *args], capture_output=True, text=True,
                          timeout=timeout)


def seen_requests() -> list[tuple[dict[str, str], remote_v1_pb2.WriteRequest]]:
    return [(headers, codec.decode(body, Protocol.V1, 1 << 24).message) for _, headers, body in Capture.seen]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("restore") / "archive")
    build_archive(path)
    return path


def test_a_mixed_archive_restores_per_tenant_in_time_order_with_everything(archive, capture):
    done = restore(f"--archive_path={archive}", f"--remote_write_url={capture}", "--remote_write_shards=2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "9 selected, 9 sent, 0 retried, 0 dead-lettered" in done.stdout, done.stdout
    walk: list[tuple[int, float]] = []
    tenants, types, stale, histograms, exemplars = {}, {}, [], [], []
    for headers, request in seen_requests():
        for entry in request.metadata:
            types[entry.metric_family_name] = entry.type
        for s in request.timeseries:
            labels = {lab.name: lab.value for lab in s.labels}
            tenants[labels["__name__"]] = headers["X-Scope-OrgID"]
            if labels["__name__"] == "walk_total":
                walk += [(x.timestamp, x.value) for x in s.samples]
            stale += [float_bits(x.value) for x in s.samples if x.value != x.value]
            histograms += list(s.histograms)
            exemplars += [(e.value, e.labels[0].value) for e in s.exemplars]
    # one series over three files, two formats and two hours: sent once each, oldest first
    assert walk == [(T8 + HOUR + d, v) for d, v in ((-2000, 1.0), (-1000, 2.0), (0, 3.0), (1000, 4.0),
                                                    (2000, 5.0), (3000, 6.0))]
    assert tenants == {"walk_total": "team-a", "latency": "team-a", "up": "team-b"}
    assert stale == [STALE_NAN_BITS]
    assert [h.SerializeToString() for h in histograms] == [
        histogram_request(T8 + HOUR + 500).timeseries[0].histograms[0].SerializeToString()]
    assert exemplars == [(0.3, "t-1")]
    assert types == {"walk_total": 1, "up": 2, "latency": 3}  # counter, gauge, histogram: metadata re-sent


def test_selection_dry_run_and_usage_errors(archive, capture):
    done = restore(f"--archive_path={archive}", "--dry_run", "--tenant=team-a", '--match={__name__=~"walk.*"}',
                   "--start=2026-11-25T08:59:59Z", "--end=2026-11-25T09:00:02Z")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("tenant team-a: 1 series, 4 samples, 2026-11-25T08:59:59.000Z .. "
                                   "2026-11-25T09:00:02.000Z (dry run: nothing sent)")
    empty = restore(f"--archive_path={archive}", f"--remote_write_url={capture}", '--match={job="nobody"}')
    assert (empty.returncode, empty.stdout.strip()) == (0, "restore: nothing selected (4 file(s) read)")
    pruned = restore(f"--archive_path={archive}", f"--remote_write_url={capture}", "--tenant=nobody")
    assert pruned.returncode == 2 and pruned.stderr.strip().endswith("tenants there: team-a, team-b")
    assert Capture.seen == []
    for bad, says in (('--match={job="x"', "--match"), ("--start=tomorrow", "--start"),
                      ("--remote_write_url=ftp://x", "must be http")):
        failed = restore(f"--archive_path={archive}", f"--remote_write_url={capture}", bad)
        assert failed.returncode == 2 and says in failed.stderr and len(failed.stderr.strip().splitlines()) == 1
    missing = restore("--archive_path=/nonexistent/archive", f"--remote_write_url={capture}")
    assert missing.returncode == 2 and "no archive files" in missing.stderr


def test_a_corrupt_file_is_named_and_skipped_or_stops_everything(tmp_path, capture):
    archive = str(tmp_path / "archive")
    build_archive(archive)
    broken = Path(archive, "tenant=team-a/date=2026-11-25/hour=09/part-b-0000.parquet")
    broken.write_bytes(broken.read_bytes()[:200])  # truncated: no footer
    garbage = Path(archive, "tenant=team-b/date=2026-11-25/hour=09/part-x-0000.ndjson.gz")
    garbage.write_bytes(gzip.compress(b'{"name": "up", "tags": {}, "timest'))
    foreign = Path(archive, "_metadata/tenant=team-a/date=2026-11-25/hour=09/part-y-0000.ndjson.gz")
    foreign.parent.mkdir(parents=True, exist_ok=True)
    foreign.write_bytes(gzip.compress(b'{"name": "walk_total", "type": "counter"}\n'))  # fields missing
    stopped = restore(f"--archive_path={archive}", f"--remote_write_url={capture}", "--fail_fast")
    assert stopped.returncode == 1 and "--fail_fast" in stopped.stderr and "part-" in stopped.stderr
    assert Capture.seen == [], "nothing is sent before every file was read"
    skipped = restore(f"--archive_path={archive}", f"--remote_write_url={capture}")
    assert skipped.returncode == 1
    assert str(broken) in skipped.stderr and str(garbage) in skipped.stderr and str(foreign) in skipped.stderr
    assert "3 unreadable archive file(s) skipped" in skipped.stderr
    assert "6 selected, 6 sent" in skipped.stdout  # the readable files' samples were delivered


def test_a_sink_refusing_everything_ends_with_dead_letters(archive, capture, tmp_path):
    Capture.answers = [(403, {})] * 100
    dead = tmp_path / "dead"
    refused = restore(f"--archive_path={archive}", f"--remote_write_url={capture}", f"--dead_letter_path={dead}")
    assert refused.returncode == 1 and "9 dead-lettered" in refused.stdout
    assert "dead-lettered under" in refused.stderr and list(dead.rglob("*.ndjson"))
    Capture.answers, Capture.seen = [(503, {})] * 10_000, []
    started = time.monotonic()
    down = restore(f"--archive_path={archive}", f"--remote_write_url={capture}", f"--dead_letter_path={dead}",
                   "--max_retry_duration=2s")
    assert down.returncode == 1 and "9 dead-lettered" in down.stdout, down.stdout + down.stderr[-1000:]
    assert time.monotonic() - started < 60 and len(Capture.seen) > 3  # retried, then gave up
    # the 2 s bound the sink's outage, not each request: from the first 503 to the last give-up
    warnings = [x for x in down.stderr.splitlines() if " WARNING " in x]
    gave_up = [x for x in down.stderr.splitlines() if " ERROR " in x and "gave up after" in x]
    assert len(warnings) == 1 and gave_up and "Traceback" not in down.stderr, down.stderr
    first, last = (datetime.strptime(x[:23], "%Y-%m-%d %H:%M:%S,%f") for x in (warnings[0], gave_up[-1]))
    assert 1.9 < (last - first).total_seconds() < 3.0, down.stderr
    assert "request(s) refused or given up on (9 samples, " in down.stderr


@pytest.mark.parametrize("store", ["gcs", "s3"])
def test_archives_on_object_storage_restore_alike(store, request, capture):
    extra = tuple(request.getfixturevalue(store))
    archive = f"{'gs' if store == 'gcs' else 's3'}://archive-bucket/restore/{time.time_ns()}"
    build_archive(archive, extra)
    done = restore(f"--archive_path={archive}", f"--remote_write_url={capture}", "--tenant=team-b", *extra)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 selected, 2 sent" in done.stdout
    (headers, request_), = [(h, r) for h, r in seen_requests() if r.timeseries]
    assert headers["X-Scope-OrgID"] == "team-b" and request_.timeseries[0].labels[0].value == "up"


SEEN = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)  # when the pipeline saw the messages: their metadata's hour
T9 = T8 + HOUR


def typed_archive(archive: str, fmt: str) -> None:
    """Tenant team-m: 1.0 metadata (a summary family, a counter), 1.0 samples (one series without metadata), and
    2.0 series carrying per-series metadata and start timestamps (floats, and a native histogram)."""
    metadata_only = build_v1([], metadata=[
        Series({"__name__": "rpc_seconds"}, metric_type="summary", help="RPC latency.", unit="seconds"),
        Series({"__name__": "walk_total"}, metric_type="counter", help="Steps walked.", unit="steps")])
    samples = build_v1([Series({"__name__": "rpc_seconds", "quantile": "0.5"}, [(T9, 0.2)]),
                        Series({"__name__": "rpc_seconds_sum"}, [(T9, 10.0)]),
                        Series({"__name__": "rpc_seconds_count"}, [(T9, 50.0)]),
                        Series({"__name__": "walk_total"}, [(T9, 3.0), (T9 + 1000, STALE_NAN)]),
                        Series({"__name__": "untyped_thing"}, [(T9, 1.0)])])
    v2 = build_v2([Series({"__name__": "temp_celsius", "job": "a"}, [(T9, 21.5), (T9 + 1000, 22.0)],
                          metric_type="gauge", help="Temperature.", unit="celsius"),
                   Series({"__name__": "lat", "job": "a"}, exemplars=[({"trace_id": "x"}, T9 + 2, 0.5)],
                          metric_type="histogram", help="Latency.", unit="seconds")])
    v2.timeseries[0].samples[0].start_timestamp = T9 - 60_000
    v2.timeseries[0].samples[1].start_timestamp = T9 - 60_000
    v2.timeseries[1].histograms.add(count_int=2, sum=0.75, schema=0, positive_spans=[{"offset": 0, "length": 1}],
                                    positive_deltas=[2], timestamp=T9 + 2, start_timestamp=T9 - 30_000)
    messages = [PubsubMessage(codec.encode(m), codec.message_attributes(p, "team-m", "x", codec.count(m)),
                              message_id=f"m-{i}", publish_time=SEEN)
                for i, (m, p) in enumerate([(metadata_only, Protocol.V1), (samples, Protocol.V1), (v2, Protocol.V2)])]
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        _ = p | beam.Create(messages) | ArchiveMessages(archive, archive + "/_dead", archive_format=fmt,
                                                        file_label=lambda window, pane: "m")


@pytest.mark.parametrize("fmt", ["ndjson", "parquet"])
def test_help_unit_exact_types_and_start_timestamps_reach_1_0_and_2_0_sinks(tmp_path, capture, fmt):
    archive = str(tmp_path / "archive")
    typed_archive(archive, fmt)
    assert list(Path(archive, "_metadata", "tenant=team-m", "date=2026-11-25", "hour=09").glob("part-m-*"))

    done = restore(f"--archive_path={archive}", f"--remote_write_url={capture}", "--remote_write_shards=2")
    assert done.returncode == 0 and "9 selected, 9 sent" in done.stdout, done.stdout + done.stderr[-2000:]
    metadata = {}
    for headers, request in seen_requests():  # what a 1.0 receiver got, decoded by upb
        assert headers["Content-Type"] == "application/x-protobuf"
        metadata.update({m.metric_family_name: (m.type, m.help, m.unit) for m in request.metadata})
    assert metadata == {
        "rpc_seconds": (5, "RPC latency.", "seconds"),  # summary: the exact type, under the family's own name
        "walk_total": (1, "Steps walked.", "steps"),
        "temp_celsius": (2, "Temperature.", "celsius"),  # from 2.0 per-series metadata
        "lat": (3, "Latency.", "seconds"),
        "untyped_thing": (2, "", ""),  # no metadata record: the type its samples were archived as
    }

    Capture.seen = []
    done = restore(f"--archive_path={archive}", f"--remote_write_url={capture}", "--remote_write_shards=2",
                   "--remote_write_protocol=2.0")
    assert done.returncode == 0 and "9 selected, 9 sent" in done.stdout, done.stdout + done.stderr[-2000:]
    series: dict[str, tuple[remote_v2_pb2.TimeSeries, tuple[str, str]]] = {}
    for _, headers, body in Capture.seen:  # what a 2.0 receiver got, decoded by upb
        assert "proto=io.prometheus.write.v2" in headers["Content-Type"]
        request = codec.decode(body, Protocol.V2, 1 << 24).message
        for s in request.timeseries:
            name = dict(ref_pairs(s.labels_refs, request.symbols))["__name__"]
            series[name] = (s, (request.symbols[s.metadata.help_ref], request.symbols[s.metadata.unit_ref]))
    assert set(series) == {"rpc_seconds", "rpc_seconds_sum", "rpc_seconds_count", "walk_total", "untyped_thing",
                           "temp_celsius", "lat"}
    described = {name: (s.metadata.type, *texts) for name, (s, texts) in series.items()}
    assert described == {  # every series carries its family's metadata, whichever shard sent it
        "rpc_seconds": (5, "RPC latency.", "seconds"), "rpc_seconds_sum": (5, "RPC latency.", "seconds"),
        "rpc_seconds_count": (5, "RPC latency.", "seconds"), "walk_total": (1, "Steps walked.", "steps"),
        "untyped_thing": (2, "", ""), "temp_celsius": (2, "Temperature.", "celsius"),
        "lat": (3, "Latency.", "seconds")}
    temp, lat = series["temp_celsius"][0], series["lat"][0]
    assert [(s.timestamp, s.start_timestamp, s.value) for s in temp.samples] == [
        (T9, T9 - 60_000, 21.5), (T9 + 1000, T9 - 60_000, 22.0)]
    assert [(h.timestamp, h.start_timestamp, h.count_int) for h in lat.histograms] == [(T9 + 2, T9 - 30_000, 2)]
    assert [(e.timestamp, e.value) for e in lat.exemplars] == [(T9 + 2, 0.5)]
    assert [float_bits(s.value) for s in series["walk_total"][0].samples][1] == STALE_NAN_BITS
