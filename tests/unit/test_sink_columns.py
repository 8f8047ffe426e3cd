"""The sinks' columnar path against the Python path it replaced (kept for the series carrying histograms or
exemplars).

Every request body the compiled encoder sends must decode (upb) to exactly what the Python path sent
for the same messages: same requests, same series, same samples bit for bit (NaN payloads, the stale
marker, +-Inf, -0.0), same 2.0 symbols, metadata and start timestamps, same splits on a 400.
"""

from __future__ import annotations

import base64
import json
import math
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.forwarder_helpers import URL, Capture, PythonPath
from transforms.core.metadata import TYPE_NUMBERS
from transforms.core.protocol import MAX_DECOMPRESSED, STALE_NAN_BITS, Protocol, float_bits
from transforms.core.sink import config
from transforms.core.sink.columns import Columns, ColumnShard, SinkSeries
from transforms.core.wire import _wire, codec, snappy_block
from transforms.core.wire.convert import label_bytes
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2
from transforms.io.sink_driver import Forwarder


def canonical(content_type: str, raw: bytes) -> bytes:
    kind = remote_v2_pb2.Request if "v2" in content_type else remote_v1_pb2.WriteRequest
    return kind.FromString(raw).SerializeToString(deterministic=True)


def value_of(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


VALUES = st.one_of(st.floats(width=64), st.sampled_from([
    value_of(STALE_NAN_BITS), value_of(0x7FF8000000000001), value_of(0xFFF8000000000000), math.inf, -math.inf,
    -0.0, 0.0, 1.5]))
LABEL_SETS = st.lists(st.tuples(st.sampled_from(["up", "go_gc", "node_cpu_seconds_total"]),
                                st.sampled_from(["", "x", "é", "bad", "y" * 40]),
                                st.sampled_from(["", "h1", "h2"])), min_size=1, max_size=6, unique=True)
RULES = st.sampled_from([
    [], [{"action": "labeldrop", "regex": "instance"}], [{"action": "drop", "source_labels": ["__name__"],
                                                          "regex": "go_.*"}],
    [{"action": "keep", "source_labels": ["job"], "regex": "x|é"}]])


@st.composite
def messages(draw):
    pool = draw(LABEL_SETS)
    out = []
    for _ in range(draw(st.integers(1, 3))):
        protocol = draw(st.sampled_from([Protocol.V1, Protocol.V2]))
        chosen = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=len(pool), unique=True))
        with_metadata = draw(st.booleans())
        if protocol is Protocol.V1:
            request = remote_v1_pb2.WriteRequest()
        else:
            request, symbols = remote_v2_pb2.Request(), {"": 0}
        for name, job, instance in chosen:
            labels = sorted({"__name__": name, "job": job, "instance": instance}.items())
            samples = draw(st.lists(st.tuples(st.integers(-3, 12), VALUES, st.sampled_from([0, 0, 5, -7])),
                                    min_size=1, max_size=6))
            series = request.timeseries.add()
            if protocol is Protocol.V1:
                series.labels.extend(remote_v1_pb2.Label(name=n, value=v) for n, v in labels)
                series.samples.extend(remote_v1_pb2.Sample(timestamp=t, value=v) for t, v, _ in samples)
                continue
            for n, v in labels:
                series.labels_refs.extend((symbols.setdefault(n, len(symbols)), symbols.setdefault(v, len(symbols))))
            series.samples.extend(remote_v2_pb2.Sample(timestamp=t, value=v, start_timestamp=s) for t, v, s in samples)
            series.created_timestamp = draw(st.sampled_from([0, 0, 3]))
            if with_metadata:
                series.metadata.type = TYPE_NUMBERS["counter"]
                series.metadata.help_ref = symbols.setdefault("help me", len(symbols))
        if protocol is Protocol.V1 and with_metadata:
            request.metadata.add(type=TYPE_NUMBERS["gauge"], metric_family_name=chosen[0][0], help="h", unit="u")
        if protocol is Protocol.V2:
            request.symbols.extend(symbols)
        out.append((codec.encode(request), {"protocol": protocol.value, "tenant": draw(st.sampled_from(["a", "b"]))}))
    return out


def run(forwarder_type, sink, written, batch):
    service = Capture(written)
    forwarder = forwarder_type(sink, service=service)
    batches, dead = forwarder.shard_messages(batch)
    assert dead == []
    for (tenant, shard) in sorted(batches):
        dead += forwarder.send_shard(tenant, batches[(tenant, shard)])
    letters = [json.loads(d) for d in dead]
    refused = [(d["status"], canonical("v1", snappy_block.decompress(base64.b64decode(d["data_base64"]),
                                                                    MAX_DECOMPRESSED))) for d in letters]
    stats = forwarder.stats.snapshot()
    counts = {k: stats[k] for k in ("requests", "samples_sent", "samples_dead_lettered", "samples_dropped_by_rules",
                                    "metadata_sent", "protocol_fallbacks")}
    return [canonical(t, raw) for t, raw in service.bodies], refused, counts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=messages(), protocol=st.sampled_from(["1.0", "2.0"]), rules=RULES, shards=st.integers(1, 3),
       max_points=st.integers(1, 7), max_bytes=st.integers(30, 2000), written=st.booleans())
def test_compiled_bodies_decode_to_what_the_python_path_sent(batch, protocol, rules, shards, max_points, max_bytes,
                                                             written):
    (sink,) = config.from_document(json.dumps({"remote_write": [{
        "url": URL, "protocol": protocol, "write_relabel_configs": rules,
        "queue_config": {"shards": shards, "max_samples_per_send": max_points, "max_bytes_per_send": max_bytes}}]}))
    assert run(Forwarder, sink, written, batch) == run(PythonPath, sink, written, batch)


def test_the_columnar_path_is_the_one_taken_for_float_samples():
    """Guards the property above from comparing the Python path with itself."""
    (sink,) = config.from_flags([URL])
    request = remote_v1_pb2.WriteRequest()
    series = request.timeseries.add()
    series.labels.add(name="__name__", value="up")
    series.samples.add(timestamp=2, value=1.0)
    batches, _ = Forwarder(sink, service=Capture(False)).shard_messages([(codec.encode(request),
                                                                          {"protocol": "1.0", "tenant": "t"})])
    (only,) = batches.values()
    assert only.columns is not None and len(only.columns) == 1 and not only.series


def test_encoder_keeps_value_bits_and_start_timestamps():
    keys = [label_bytes((("__name__", "up"),))]
    bits = np.array([STALE_NAN_BITS, 0x7FF8000000000001, float_bits(-0.0), float_bits(math.inf), 0], np.uint64)
    cols = Columns(np.zeros(5, np.uint32), np.arange(5, dtype=np.int64), bits, np.array([0, 9, 0, 1, 2], np.int64))
    v1 = remote_v1_pb2.WriteRequest.FromString(_wire.encode_v1(keys, cols.series, cols.timestamps, cols.bits, 0, 5))
    assert [float_bits(s.value) for s in v1.timeseries[0].samples] == bits.tolist()
    v2 = remote_v2_pb2.Request.FromString(_wire.encode_v2(
        [(("__name__", "up"),)], {0: (1, "", "seconds")}, cols.series, cols.timestamps, cols.bits, cols.starts, 0, 5))
    assert list(v2.symbols) == ["", "__name__", "up", "seconds"]
    assert [s.start_timestamp for s in v2.timeseries[0].samples] == [0, 9, 0, 1, 2]
    assert v2.timeseries[0].metadata.type == 1 and v2.timeseries[0].metadata.unit_ref == 3


def test_ordering_merges_sorts_and_drops_exact_repeats():
    sink_series = SinkSeries((), shards=1)
    shard = ColumnShard(sink_series)
    nan_a, nan_b = 0x7FF8000000000001, 0x7FF8000000000002
    shard.add(Columns(np.array([1, 0, 1], np.uint32), np.array([5, 3, 4], np.int64),
                      np.array([nan_a, 7, nan_a], np.uint64), None))
    shard.add(Columns(np.array([1, 1], np.uint32), np.array([5, 5], np.int64), np.array([nan_a, nan_b], np.uint64),
                      None))
    ordered = shard.ordered()
    assert ordered.series.tolist() == [1, 1, 1, 0]  # series 1 arrived first
    assert ordered.timestamps.tolist() == [4, 5, 5, 3]
    assert ordered.bits.tolist() == [nan_a, nan_a, nan_b, 7]  # the repeat of (5, nan_a) sent once, nan_b kept


def _ordered_by_the_rule(parts: list[Columns]) -> list[tuple[int, int, int]]:
    """Series by first arrival, each one's samples by time then arrival, the first of each exact repeat kept."""
    rows = [(int(s), int(t), int(b)) for p in parts for s, t, b in zip(p.series, p.timestamps, p.bits, strict=True)]
    rank: dict[int, int] = {}
    for s, _, _ in rows:
        rank.setdefault(s, len(rank))
    seen, out = set(), []
    for _, row in sorted(enumerate(rows), key=lambda e: (rank[e[1][0]], e[1][1], e[0])):
        if row not in seen:
            seen.add(row)
            out.append(row)
    return out


PART = st.lists(st.tuples(st.integers(0, 4), st.sampled_from([0, 1000, 2000, 1 << 43]), st.integers(0, 2)),
                min_size=1, max_size=12)


@settings(max_examples=400, deadline=None)
@given(st.lists(PART, min_size=1, max_size=3), st.booleans())
def test_ordering_shortcuts_give_what_the_rule_says(parts, runs: bool):
    """`ordered`'s shortcuts (rows already in series runs in time order: as they are; else one packed-key sort
    when no (series, timestamp) repeats and the key fits) against the rule, row by row."""
    if runs:  # an archive file's shape: each series one run, its times increasing
        parts = [sorted({(s, t): (s, t, b) for s, t, b in part}.values()) for part in parts]
    columns = [Columns(np.array([r[0] for r in p], np.uint32), np.array([r[1] for r in p], np.int64),
                       np.array([r[2] for r in p], np.uint64), None) for p in parts]
    shard = ColumnShard(SinkSeries((), shards=1))
    for c in columns:
        shard.add(c)
    got = shard.ordered()
    assert list(zip(got.series.tolist(), got.timestamps.tolist(), got.bits.tolist(), strict=True)) == \
        _ordered_by_the_rule(columns)


def test_encoder_refuses_bad_columns():
    keys = [label_bytes((("__name__", "up"),))]
    with np.testing.assert_raises(IndexError):
        _wire.encode_v1(keys, np.array([3], np.uint32), np.zeros(1, np.int64), np.zeros(1, np.uint64), 0, 1)
    with np.testing.assert_raises(ValueError):
        _wire.encode_v1(keys, np.zeros(2, np.uint32), np.zeros(1, np.int64), np.zeros(1, np.uint64), 0, 1)
    with np.testing.assert_raises(IndexError):
        _wire.encode_v1(keys, np.zeros(1, np.uint32), np.zeros(1, np.int64), np.zeros(1, np.uint64), 0, 2)
