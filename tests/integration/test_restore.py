"""`python -m pipeline.restore` as a user runs it, against an archive the pipeline's own writers produced
(NDJSON and Parquet mixed, two tenants, two hours), delivering to a capture server that records what a
remote-write peer sees; plus bad input, a refusing sink, and archives on GCS and S3."""

from __future__ import annotations

import gzip
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions

from tests.sink_helpers import Capture
from transforms import codec
from transforms.beam import ArchiveMessages
from transforms.builders import Series, build_v1
from transforms.proto import remote_v1_pb2
from transforms.protocol import STALE_NAN, STALE_NAN_BITS, Protocol, float_bits

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
    assert pruned.returncode == 0 and pruned.stdout.startswith("restore: nothing selected")
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
    stopped = restore(f"--archive_path={archive}", f"--remote_write_url={capture}", "--fail_fast")
    assert stopped.returncode == 1 and "--fail_fast" in stopped.stderr and "part-" in stopped.stderr
    assert Capture.seen == [], "nothing is sent before every file was read"
    skipped = restore(f"--archive_path={archive}", f"--remote_write_url={capture}")
    assert skipped.returncode == 1
    assert str(broken) in skipped.stderr and str(garbage) in skipped.stderr
    assert "2 unreadable archive file(s) skipped" in skipped.stderr
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
