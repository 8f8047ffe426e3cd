"""Requests mixing float series with series that carry native histograms or exemplars (the decoder's side data).

Only the side series take the slower path: the archive must still hold exactly metric_to_log's lines of the whole
request (same partitions, same lines, same order), and a sink must receive exactly the series content the whole
request's protobuf path sent (every series' samples with their start timestamps, histograms, exemplars and
metadata, the same dead letters and counts), for 1.0 and 2.0 requests, through 1.0 and 2.0 sinks.
"""

from __future__ import annotations

import base64
import json
import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.forwarder_helpers import URL, Capture, PythonPath
from tests.histogram_helpers import make_histogram
from tests.reference.metric_to_log import convert
from transforms.core.archive.format import archive_format
from transforms.core.archive.lines import BatchLines
from transforms.core.metadata import TYPE_NUMBERS, MetadataStore
from transforms.core.protocol import MAX_DECOMPRESSED, STALE_NAN_BITS, Protocol, float_bits, ref_pairs
from transforms.core.sink import config
from transforms.core.wire import codec, snappy_block
from transforms.core.wire.batch import Batch
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2
from transforms.io.sink_driver import Forwarder

T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def value_of(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


VALUES = st.one_of(st.floats(width=64), st.sampled_from([value_of(STALE_NAN_BITS), math.inf, -0.0, 1.5]))
LABEL_SETS = st.lists(st.tuples(st.sampled_from(["up", "rpc_seconds", "node_cpu_seconds_total"]),
                                st.sampled_from(["", "x", "é", "bad"]), st.sampled_from(["", "h1"])),
                      min_size=1, max_size=6, unique=True)
RULES = st.sampled_from([[], [{"action": "labeldrop", "regex": "instance"}],
                         [{"action": "drop", "source_labels": ["__name__"], "regex": "up"}]])


def mixed_request(draw, protocol: Protocol, pool: list[tuple[str, str, str]], base: int = T0):
    """One request over some of `pool`'s label sets: float series, and series with histograms or exemplars,
    each series at times of its own from `base` on."""
    chosen = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=len(pool), unique=True))
    if protocol is Protocol.V1:
        request = remote_v1_pb2.WriteRequest()
    else:
        request, symbols = remote_v2_pb2.Request(), {"": 0}

    def ref(text: str) -> int:
        return symbols.setdefault(text, len(symbols))

    for i, (name, job, instance) in enumerate(chosen):
        labels = sorted({"__name__": name, "job": job, "instance": instance}.items())
        at = base + 20 * i
        kind = draw(st.sampled_from(["samples", "samples", "histograms", "both"]))
        if protocol is Protocol.V2 and kind == "both":  # 2.0: a series carries samples or histograms
            kind = "samples"
        samples = draw(st.lists(st.tuples(st.integers(-3, 12), VALUES, st.sampled_from([0, 0, 5])), max_size=5))
        if kind == "samples" and not samples:
            samples = [(1, 1.0, 0)]
        series = request.timeseries.add()
        points = samples if kind != "histograms" else []
        stamps = draw(st.lists(st.integers(-3, 12), min_size=1, max_size=3)) if kind != "samples" else []
        histograms = [make_histogram(i, step, at + t, floats=bool(step % 2)) for step, t in enumerate(stamps)]
        exemplars = draw(st.lists(st.tuples(st.integers(-3, 12), VALUES), max_size=2))
        if protocol is Protocol.V1:
            series.labels.extend(remote_v1_pb2.Label(name=n, value=v) for n, v in labels)
            series.samples.extend(remote_v1_pb2.Sample(timestamp=at + t, value=v) for t, v, _ in points)
            series.histograms.extend(histograms)
            for t, v in exemplars:
                series.exemplars.add(timestamp=at + t, value=v).labels.add(name="trace_id", value=f"t{t}")
            continue
        for n, v in labels:
            series.labels_refs.extend((ref(n), ref(v)))
        series.samples.extend(remote_v2_pb2.Sample(timestamp=at + t, value=v, start_timestamp=s and T0 - s)
                              for t, v, s in points)
        for h in histograms:
            series.histograms.add().MergeFromString(h.SerializeToString())
            series.histograms[-1].start_timestamp = draw(st.sampled_from([0, T0 - 9]))
        for t, v in exemplars:
            series.exemplars.add(timestamp=at + t, value=v).labels_refs.extend((ref("trace_id"), ref(f"t{t}")))
        series.created_timestamp = draw(st.sampled_from([0, 0, T0 - 3]))
        if draw(st.booleans()):
            series.metadata.type = TYPE_NUMBERS["histogram" if histograms else "counter"]
            series.metadata.help_ref = ref(f"help {name}")
            series.metadata.unit_ref = ref("seconds")
    if protocol is Protocol.V1 and draw(st.booleans()):
        request.metadata.add(type=TYPE_NUMBERS["counter"], metric_family_name=chosen[0][0], help="h", unit="u")
    if protocol is Protocol.V2:
        request.symbols.extend(symbols)
    return request


@st.composite
def messages(draw):
    pool = draw(LABEL_SETS)
    out = []
    for k in range(draw(st.integers(1, 3))):
        protocol = draw(st.sampled_from([Protocol.V1, Protocol.V2]))
        # each message and series its own times: samples of one output series at one time from two input
        # series (a duplicate Prometheus refuses) may leave a flush in either order once a float series'
        # columns join a side series' protobuf pieces (ShardBatch), and the comparison below is exact
        request = mixed_request(draw, protocol, pool, T0 + 1000 * k)
        out.append((codec.encode(request), {"protocol": protocol.value, "tenant": draw(st.sampled_from(["a", "b"]))}))
    return out


def delivered(bodies: list[tuple[dict[str, str], bytes]], written: bool) -> dict:
    """What a sink holds after these bodies, per (tenant, labels): samples (timestamp, value bits, start),
    histograms and exemplars in the order received, and the metadata seen; plus 1.0 metadata entries.
    A sink that answers 2.0 without *-Written counts is a 1.x receiver: its 2.0 bodies hold nothing."""
    out: dict = {}
    for headers, raw in bodies:
        tenant = headers.get("X-Scope-OrgID")
        if ("v2" in headers["Content-Type"] and not written) or b"\x03bad" in raw:  # (Capture refuses "bad")
            continue
        if "v2" in headers["Content-Type"]:
            request = remote_v2_pb2.Request.FromString(raw)
            symbols = list(request.symbols)
            for s in request.timeseries:
                entry = out.setdefault((tenant, tuple(ref_pairs(s.labels_refs, symbols))),
                                       {"samples": [], "histograms": [], "exemplars": [], "metadata": set()})
                entry["samples"] += [(x.timestamp, float_bits(x.value), x.start_timestamp) for x in s.samples]
                entry["histograms"] += [h.SerializeToString(deterministic=True) for h in s.histograms]
                entry["exemplars"] += [(e.timestamp, float_bits(e.value), tuple(ref_pairs(e.labels_refs, symbols)))
                                       for e in s.exemplars]
                if s.HasField("metadata"):
                    entry["metadata"].add((s.metadata.type, symbols[s.metadata.help_ref],
                                           symbols[s.metadata.unit_ref]))
            continue
        request = remote_v1_pb2.WriteRequest.FromString(raw)
        for m in request.metadata:
            out.setdefault((tenant, "metadata"), set()).add(m.SerializeToString(deterministic=True))
        for s in request.timeseries:
            entry = out.setdefault((tenant, tuple((lab.name, lab.value) for lab in s.labels)),
                                   {"samples": [], "histograms": [], "exemplars": [], "metadata": set()})
            entry["samples"] += [(x.timestamp, float_bits(x.value), 0) for x in s.samples]
            entry["histograms"] += [h.SerializeToString(deterministic=True) for h in s.histograms]
            entry["exemplars"] += [(e.timestamp, float_bits(e.value), tuple((lab.name, lab.value) for lab in e.labels))
                                   for e in s.exemplars]
    return out


class HeaderCapture(Capture):
    """Capture, keeping each body's headers (the tenant) too."""

    def __init__(self, written: bool) -> None:
        super().__init__(written)
        self.sent: list[tuple[dict[str, str], bytes]] = []

    def post(self, body, headers, points=0):
        self.sent.append((headers, snappy_block.decompress(body, MAX_DECOMPRESSED)))
        return super().post(body, headers, points)


def run(forwarder_type, sink, written, batch):
    service = HeaderCapture(written)
    forwarder = forwarder_type(sink, service=service)
    batches, dead = forwarder.shard_messages(batch)
    for (tenant, shard) in sorted(batches):
        dead += forwarder.send_shard(tenant, batches[(tenant, shard)])
    letters = sorted((d["status"], d["attributes"]["tenant"],
                      remote_v1_pb2.WriteRequest.FromString(snappy_block.decompress(
                          base64.b64decode(d["data_base64"]), MAX_DECOMPRESSED)).SerializeToString(deterministic=True))
                     for d in map(json.loads, dead))
    stats = forwarder.stats.snapshot()
    counts = {k: stats[k] for k in ("samples_sent", "samples_dead_lettered", "samples_dropped_by_rules",
                                    "metadata_sent", "protocol_fallbacks")}
    return delivered(service.sent, written), letters, counts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=messages(), protocol=st.sampled_from(["1.0", "2.0"]), rules=RULES, shards=st.integers(1, 3),
       max_points=st.integers(1, 7), written=st.booleans())
def test_a_sink_gets_what_the_whole_request_protobuf_path_sent(batch, protocol, rules, shards, max_points, written):
    (sink,) = config.from_document(json.dumps({"remote_write": [{
        "url": URL, "protocol": protocol, "write_relabel_configs": rules, "headers": {},
        "queue_config": {"shards": shards, "max_samples_per_send": max_points, "max_bytes_per_send": 4000}}]}))
    assert run(Forwarder, sink, written, batch) == run(PythonPath, sink, written, batch)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(protocol=st.sampled_from([Protocol.V1, Protocol.V2]), data=st.data())
def test_archive_lines_of_a_mixed_request_are_metric_to_logs(protocol, data):
    pool = data.draw(LABEL_SETS)
    request = mixed_request(data.draw, protocol, pool)
    lines = BatchLines(MetadataStore())
    batch = codec.decode(codec.encode(request), protocol, 1 << 24, table=lines.table("t")).batch
    reference = {partition: ("\n".join(records) + "\n").encode()
                 for partition, records in convert(request, protocol, "t", MetadataStore()).items() if records}
    assert {partition: block.data for partition, block in lines.convert(batch, "t").items()} == reference


def large_request(protocol: Protocol, floats: int = 1000, metadata: bool = True
                  ) -> remote_v1_pb2.WriteRequest | remote_v2_pb2.Request:
    """`floats` float series and, in the middle, one native-histogram series and one float series with an
    exemplar; 2.0 with per-sample start timestamps (and per-series metadata unless told otherwise)."""
    if protocol is Protocol.V1:
        request = remote_v1_pb2.WriteRequest()
        for i in range(floats):
            s = request.timeseries.add()
            s.labels.extend([remote_v1_pb2.Label(name="__name__", value="rpc_total"),
                             remote_v1_pb2.Label(name="i", value=str(i))])
            s.samples.add(timestamp=T0 + i, value=i * 0.5)
            if i == floats // 2:
                s.exemplars.add(timestamp=T0 + i, value=0.25).labels.add(name="trace_id", value="abc")
                h = request.timeseries.add()
                h.labels.add(name="__name__", value="rpc_seconds")
                h.histograms.append(make_histogram(1, 2, T0 + 5, floats=False))
        return request
    request, symbols = remote_v2_pb2.Request(), {"": 0}

    def ref(text: str) -> int:
        return symbols.setdefault(text, len(symbols))

    for i in range(floats):
        s = request.timeseries.add(labels_refs=[ref("__name__"), ref("rpc_total"), ref("i"), ref(str(i))])
        s.samples.add(timestamp=T0 + i, value=i * 0.5, start_timestamp=T0 - 60_000)
        if metadata:
            s.metadata.type = TYPE_NUMBERS["counter"]
        if i == floats // 2:
            s.exemplars.add(timestamp=T0 + i, value=0.25, labels_refs=[ref("trace_id"), ref("abc")])
            h = request.timeseries.add(labels_refs=[ref("__name__"), ref("rpc_seconds")])
            h.histograms.add().MergeFromString(make_histogram(1, 2, T0 + 5, floats=True).SerializeToString())
            h.histograms[0].start_timestamp = T0 - 1000
    request.symbols.extend(symbols)
    return request


@pytest.mark.parametrize("protocol", [Protocol.V1, Protocol.V2])
def test_a_large_mixed_request_is_archived_and_forwarded_like_the_whole_request(protocol):
    request = large_request(protocol)
    lines = BatchLines(MetadataStore())
    batch = codec.decode(codec.encode(request), protocol, 1 << 24, table=lines.table("t")).batch
    assert batch.slow == [500, 501]
    reference = {partition: ("\n".join(records) + "\n").encode()
                 for partition, records in convert(request, protocol, "t", MetadataStore()).items() if records}
    assert {partition: block.data for partition, block in lines.convert(batch, "t").items()} == reference
    (sink,) = config.from_flags([URL], protocol=protocol.value, shards=2)
    message = [(codec.encode(request), {"protocol": protocol.value, "tenant": "t"})]
    assert run(Forwarder, sink, True, message) == run(PythonPath, sink, True, message)


@pytest.mark.parametrize("protocol", [Protocol.V1, Protocol.V2])
def test_only_the_side_series_are_parsed(protocol, monkeypatch):
    """1000 float series and two side series: neither the archive nor a sink parses the request whole (what
    made every such request slow), so 1000 series stay on the compiled path. (Requests with metadata are
    read by upb for it, as float-only ones are.)"""
    def whole(_batch):
        raise AssertionError("the whole request was parsed")

    monkeypatch.setattr(Batch, "message", property(whole))
    request = large_request(protocol, metadata=False)
    for format_name in ("ndjson", "parquet"):
        fmt = archive_format(format_name)
        converter = fmt.converter(MetadataStore())
        batch = codec.decode(codec.encode(request), protocol, 1 << 24, table=converter.table("t")).batch
        blocks = fmt.convert(converter, batch, "t")
        assert sum(block.lines for block in blocks.values()) == 1000 + 1 + 1  # floats, the histogram, the exemplar
    (sink,) = config.from_flags([URL], protocol=protocol.value, shards=2)
    service = HeaderCapture(True)
    forwarder = Forwarder(sink, service=service)
    assert forwarder.forward([(codec.encode(request), {"protocol": protocol.value, "tenant": "t"})]) == []
    assert forwarder.stats.snapshot()["samples_sent"] == 1000 + 1  # floats and the histogram
