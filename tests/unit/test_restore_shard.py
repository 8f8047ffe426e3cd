"""The restore's sharding step: a 2.0 sink attaches each series' family metadata in whichever shard sends it,
so every shard gets the metadata entries; a 1.0 sink sends them once, from shard 0."""

from __future__ import annotations

import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage

from tests.archive_samples import T0
from transforms.beam import restore as beam_restore
from transforms.beam import sinks as beam_sinks
from transforms.beam.restore import MergeMetadata, ShardRestored
from transforms.core.archive.records import Sample
from transforms.core.metadata import TYPE_NUMBERS
from transforms.core.protocol import Protocol
from transforms.core.restore.selection import Selection, to_request
from transforms.core.sink.config import QueueConfig, SinkConfig
from transforms.core.wire import codec, snappy_block
from transforms.core.wire.builders import Series, build_v1
from transforms.core.wire.proto import remote_v1_pb2


@pytest.mark.parametrize("protocol", [Protocol.V1, Protocol.V2])
def test_every_shard_of_a_2_0_sink_gets_the_metadata(protocol: Protocol) -> None:
    points = [Sample("rpc_seconds_sum", [("instance", f"i-{i}")], T0, "counter", float(i), T0 - 1000)
              for i in range(40)]
    restored = to_request(points, Selection(), {"rpc_seconds": (TYPE_NUMBERS["summary"], "RPC latency.", "s")})
    step = ShardRestored(SinkConfig(url="http://127.0.0.1:9/push", name="s", protocol=protocol,
                                    queue=QueueConfig(shards=4)))
    step.setup()
    element = ("2026-11-25T09", "team-m", [(payload, p.value) for payload, p in restored.messages])
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
    streaming = beam_sinks.ShardForSink(sink)
    streaming.setup()
    assert [key for key, _ in streaming.process(PubsubMessage(body, {"protocol": "1.0"}))]
    restoring = ShardRestored(sink)
    restoring.setup()
    assert list(restoring.process(("2026-11-25T09", "team-m", [(snappy_block.decompress(body, 1 << 20), "1.0")])))
    assert not hasattr(streaming, "driver") and not hasattr(restoring, "driver"), "sharding sends nothing"
