"""The restore's sharding step: a 2.0 sink attaches each series' family metadata in whichever shard sends it,
so every shard gets the metadata entries; a 1.0 sink sends them once, from shard 0."""

from __future__ import annotations

import json

import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage

from tests.archive_samples import T0, sample_request
from tests.forwarder_helpers import Capture
from tests.reference import metric_to_log
from tests.unit.test_restore_selection import start_request
from transforms.beam import restore as beam_restore
from transforms.beam import sinks as beam_sinks
from transforms.beam.restore import MergeMetadata, ShardRestored
from transforms.core.archive.format import archive_format
from transforms.core.archive.records import Sample
from transforms.core.metadata import TYPE_NUMBERS, MetadataStore
from transforms.core.protocol import CONTENT_TYPE_V2, Protocol
from transforms.core.restore.selection import Selection, to_request
from transforms.core.sink.batching import spread_metadata
from transforms.core.sink.builder import RequestBuilder
from transforms.core.sink.columns import Columns
from transforms.core.sink.config import QueueConfig, SinkConfig
from transforms.core.sink.relabel import parse_rule
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1
from transforms.core.wire.convert import v2_to_v1
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2
from transforms.io.sink_driver import SinkDriver, wall_clock


@pytest.mark.parametrize("protocol", [Protocol.V1, Protocol.V2])
def test_every_shard_of_a_2_0_sink_gets_the_metadata(protocol: Protocol) -> None:
    points = [Sample("rpc_seconds_sum", [("instance", f"i-{i}")], T0, "counter", float(i), T0 - 1000)
              for i in range(40)]
    restored = to_request(points, Selection(), {"rpc_seconds": (TYPE_NUMBERS["summary"], "RPC latency.", "s")})
    step = ShardRestored(SinkConfig(url="http://127.0.0.1:9/push", name="s", protocol=protocol,
                                    queue=QueueConfig(shards=4)), "/nonexistent/dead-letters")
    step.setup()
    element = ("2026-11-25T09", "team-m", restored)
    out = {shard: chunk for (tenant, shard), (_, chunk) in step.process(element)}
    with_metadata = {shard for shard, (_, request, _) in out.items()
                     if remote_v1_pb2.WriteRequest.FromString(request).metadata}
    assert len({shard for shard, chunk in out.items() if chunk[2] is not None}) > 1  # series spread over shards
    assert with_metadata == ({0, 1, 2, 3} if protocol is Protocol.V2 else {0})
    (entry,) = remote_v1_pb2.WriteRequest.FromString(out[0][1]).metadata
    assert (entry.metric_family_name, entry.type, entry.help, entry.unit) == ("rpc_seconds", 5, "RPC latency.", "s")
    columns = [chunk[2] for chunk in out.values() if chunk[2] is not None]
    assert all(c[4] is not None for c in columns)  # start timestamps ride with the columns to the sending step


def test_metadata_files_merge_per_tenant_with_the_latest_seen_winning() -> None:
    merge = MergeMetadata()
    early = ("team-m", {"rpc_seconds": (T0, 5, "Old help.", "seconds"), "up": (T0, 2, "Up.", "")})
    late = ("team-m", {"rpc_seconds": (T0 + 60_000, 5, "New help.", "seconds")})
    other = ("team-n", {"up": (T0 + 1, 1, "Another tenant's.", "")})
    parts = [merge.add_input(merge.create_accumulator(), e) for e in (late, other)]
    parts.append(merge.add_input(merge.create_accumulator(), early))  # arrival order does not matter
    assert merge.extract_output(merge.merge_accumulators(parts)) == {
        "team-m": {"rpc_seconds": (5, "New help.", "seconds"), "up": (2, "Up.", "")},
        "team-n": {"up": (1, "Another tenant's.", "")}}


def test_sharding_steps_open_no_http_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """ShardForSink and ShardRestored only shard: they build no connection pool and resolve no credentials."""
    def no_http(sink: SinkConfig) -> None:
        raise AssertionError(f"a sharding step built an HTTP service for {sink.url}")

    monkeypatch.setattr(beam_sinks, "HttpService", no_http)
    monkeypatch.setattr(beam_restore, "HttpService", no_http)
    sink = SinkConfig(url="http://127.0.0.1:9/push", name="s", queue=QueueConfig(shards=2))
    body = codec.encode(build_v1([Series({"__name__": "up", "job": "a"}, [(T0, 1.0)])]))
    restored = to_request([Sample("up", [("job", "a")], T0, "gauge", 1.0, 0)], Selection())
    streaming = beam_sinks.ShardForSink(sink)
    streaming.setup()
    assert [key for key, _ in streaming.process(PubsubMessage(body, {"protocol": "1.0"}))]
    restoring = ShardRestored(sink, "/nonexistent/dead-letters")
    restoring.setup()
    assert list(restoring.process(("2026-11-25T09", "team-m", restored)))
    assert not hasattr(streaming, "driver") and not hasattr(restoring, "driver"), "sharding sends nothing"


def delivered(sink: SinkConfig, shard) -> tuple[dict[tuple, list[list[bytes]]], set[tuple]]:
    """What a sink receives, order aside: per label set its samples, histograms and exemplars (serialized, start
    timestamps included as 1.0's unknown fields), and the metadata entries."""
    driver = SinkDriver(RequestBuilder(sink, clock=wall_clock), Capture(written=True))
    batches, dead = shard(driver.builder)
    assert dead == []
    if sink.protocol is Protocol.V2:  # as the restore's sharding step does
        spread_metadata(batches, sink.queue.shards)
    for (tenant, _), batch in batches.items():
        assert driver.send_shard(tenant, batch) == []
    series: dict[tuple, list[list[bytes]]] = {}
    metadata: set[tuple] = set()
    for content_type, raw in driver.service.bodies:
        if content_type == CONTENT_TYPE_V2:
            got, _ = v2_to_v1(remote_v2_pb2.Request.FromString(raw))
            request = remote_v1_pb2.WriteRequest(timeseries=got)
        else:
            request = remote_v1_pb2.WriteRequest.FromString(raw)
            metadata |= {(m.metric_family_name, m.type, m.help, m.unit) for m in request.metadata}
        for s in request.timeseries:
            parts = series.setdefault(tuple((lab.name, lab.value) for lab in s.labels), [[], [], []])
            for i, field in enumerate((s.samples, s.histograms, s.exemplars)):
                parts[i] += [x.SerializeToString(deterministic=True) for x in field]
    return {k: [sorted(p) for p in v] for k, v in series.items()}, metadata


@pytest.mark.parametrize("with_starts", [False, True])
@pytest.mark.parametrize("protocol", [Protocol.V1, Protocol.V2])
def test_restored_columns_reach_a_sink_as_the_archived_request_did(with_starts: bool, protocol: Protocol) -> None:
    """The restore hands the sink columns and protobuf series directly; the sink gets the same series and points
    (start timestamps included) as from the request that was archived, and the restore's metadata entries."""
    original = start_request() if with_starts else sample_request()
    lines = (metric_to_log.convert_v2(original, "t") if with_starts
             else metric_to_log.convert_v1(original, "t", MetadataStore()))
    parquet = archive_format("parquet")
    points = parquet.points(parquet.encode([r for rs in lines.values() for r in rs]))
    restored = to_request(points, Selection(), {"temp_celsius": (TYPE_NUMBERS["gauge"], "Temperature.", "celsius")})
    assert (restored.starts is not None) is with_starts and restored.slow
    sink = SinkConfig(url="http://127.0.0.1:9/push", name="s", protocol=protocol, queue=QueueConfig(shards=3))
    samples = Columns(restored.sample_series, restored.timestamps, restored.values, restored.starts)
    series, metadata = delivered(sink, lambda b: b.shard_selected("t", restored.keys, restored.labels, samples,
                                                                  restored.slow, restored.metadata))
    attributes = {"protocol": "2.0" if with_starts else "1.0", "tenant": "t"}
    archived, _ = delivered(sink, lambda b: b.shard_messages([(codec.encode(original), attributes)]))
    assert series == archived
    assert sum(len(parts[0]) + len(parts[1]) for parts in series.values()) == restored.samples
    entries = {(m.metric_family_name, m.type, m.help, m.unit) for m in restored.metadata}
    assert entries and metadata == (entries if protocol is Protocol.V1 else set())  # 2.0: attached per series


def test_restored_series_go_through_the_sinks_rules_and_tenant_label() -> None:
    points = [Sample(name, [("instance", f"i-{i}"), ("team", team)], T0 + step, "gauge", float(step), 0)
              for name, team in (("keep_me", "team-a"), ("go_gc", "team-a"), ("keep_me", "team-b"))
              for i in range(3) for step in range(4)]
    restored = to_request(points, Selection())
    sink = SinkConfig(url="http://127.0.0.1:9/push", name="s", tenant_label="team", tenant_label_drop=True,
                      rules=(parse_rule({"action": "drop", "source_labels": ["__name__"], "regex": "go_.*"}, "r"),),
                      queue=QueueConfig(shards=2))
    builder = RequestBuilder(sink, clock=wall_clock)
    samples = Columns(restored.sample_series, restored.timestamps, restored.values, restored.starts)
    for _ in range(2):  # a second file of the same series adds no output series
        batches, dead = builder.shard_selected("default", restored.keys, restored.labels, samples, [], [])
        assert dead == [] and len(builder.series.keys) == 3  # the tenant label dropped: one per instance
    assert builder.stats.counts["samples_dropped_by_rules"] == 2 * 3 * 4
    sent: dict[str, set] = {}
    for (tenant, _), batch in batches.items():
        for series, _ in batch.columns.to_series() if batch.columns is not None else ():
            sent.setdefault(tenant, set()).add(tuple((lab.name, lab.value)
                                                     for lab in remote_v1_pb2.TimeSeries.FromString(series).labels))
    assert sent == {team: {(("__name__", "keep_me"), ("instance", f"i-{i}")) for i in range(3)}
                    for team in ("team-a", "team-b")}


def test_series_naming_an_invalid_tenant_are_dead_lettered_and_the_rest_restored(tmp_path) -> None:
    points = [Sample("up", [("instance", "i-1"), ("team", team)], T0, "gauge", 1.0, 0)
              for team in ("team-a", "bad tenant/../x")]
    restored = to_request(points, Selection())
    sink = SinkConfig(url="http://127.0.0.1:9/push", name="s", tenant_label="team", queue=QueueConfig(shards=2))
    step = ShardRestored(sink, str(tmp_path / "dead"))
    step.setup()
    out = list(step.process(("2026-11-25T09", "default", restored)))
    assert {tenant for (tenant, _), (_, chunk) in out if chunk[2] is not None} == {"team-a"}  # samples' tenants
    (written,) = [p for p in (tmp_path / "dead").rglob("*") if p.is_file()]
    (record,) = [json.loads(line) for line in written.read_text().splitlines()]
    assert record["sink"] == "s" and "bad tenant/../x" in record["error"]
    assert step.builder.stats.counts["samples_dead_lettered"] == 1
