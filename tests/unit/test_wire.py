"""The compiled pre-scan (transforms.core.wire._wire via transforms.core.wire.prescan) against upb, the oracle.

On random valid requests its counts equal what upb decodes; on mutated bytes it returns or raises
InvalidPayload, never anything else; over a limit it refuses with 413 naming the limit.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import hostile_bodies
from transforms.core.errors import InvalidPayload, PayloadTooLarge
from transforms.core.protocol import Protocol
from transforms.core.wire import codec, prescan, snappy_block
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2

names = st.text(min_size=0, max_size=6)
small = st.integers(min_value=0, max_value=4)
doubles = st.lists(st.floats(allow_nan=False), max_size=4)
deltas = st.lists(st.integers(min_value=-(2**40), max_value=2**40), max_size=4)


def _fill_histogram(histogram, data) -> None:
    for spans in (histogram.negative_spans, histogram.positive_spans):
        for _ in range(data.draw(small)):
            spans.add(offset=data.draw(st.integers(-5, 5)), length=data.draw(small))
    histogram.negative_deltas.extend(data.draw(deltas))
    histogram.positive_deltas.extend(data.draw(deltas))
    histogram.positive_counts.extend(data.draw(doubles))
    histogram.custom_values.extend(data.draw(doubles))
    histogram.timestamp = data.draw(st.integers(0, 2**40))


@st.composite
def v1_requests(draw) -> remote_v1_pb2.WriteRequest:
    request = remote_v1_pb2.WriteRequest()
    for _ in range(draw(st.integers(0, 6))):
        series = request.timeseries.add()
        for _ in range(draw(small)):
            series.labels.add(name=draw(names), value=draw(names))
        for _ in range(draw(small)):
            series.samples.add(value=draw(st.floats()), timestamp=draw(st.integers(-(2**62), 2**62)))
        for _ in range(draw(st.integers(0, 2))):
            exemplar = series.exemplars.add(value=1.5, timestamp=3)
            for _ in range(draw(small)):
                exemplar.labels.add(name=draw(names), value=draw(names))
        for _ in range(draw(st.integers(0, 2))):
            _fill_histogram(series.histograms.add(), _Drawer(draw))
    for _ in range(draw(st.integers(0, 3))):
        request.metadata.add(type=draw(st.integers(0, 7)), metric_family_name=draw(names), help=draw(names))
    return request


class _Drawer:
    """Lets _fill_histogram draw from inside a composite strategy."""

    def __init__(self, draw) -> None:
        self.draw = draw


@st.composite
def v2_requests(draw) -> remote_v2_pb2.Request:
    request = remote_v2_pb2.Request()
    request.symbols.extend(["", *draw(st.lists(names, max_size=8))])
    refs = st.lists(st.integers(0, 2**32 - 1), max_size=8)
    for _ in range(draw(st.integers(0, 6))):
        series = request.timeseries.add()
        series.labels_refs.extend(draw(refs))
        for _ in range(draw(small)):
            series.samples.add(value=draw(st.floats()), timestamp=draw(st.integers(0, 2**40)))
        for _ in range(draw(st.integers(0, 2))):
            _fill_histogram(series.histograms.add(), _Drawer(draw))
        for _ in range(draw(st.integers(0, 2))):
            series.exemplars.add(value=2.0, timestamp=1).labels_refs.extend(draw(refs))
        if draw(st.booleans()):
            series.metadata.type = draw(st.integers(0, 7))
            series.metadata.help_ref = draw(st.integers(0, 5))
    return request


def _bucket_entries(histograms) -> int:
    return sum(len(h.negative_spans) + len(h.positive_spans) + len(h.negative_deltas) + len(h.positive_deltas)
               + len(h.negative_counts) + len(h.positive_counts) + len(h.custom_values) for h in histograms)


def oracle_v1(request: remote_v1_pb2.WriteRequest) -> prescan.WireCounts:
    series = request.timeseries
    return prescan.WireCounts(
        series=len(series), samples=sum(len(s.samples) for s in series),
        histograms=sum(len(s.histograms) for s in series), exemplars=sum(len(s.exemplars) for s in series),
        labels=sum(len(s.labels) + sum(len(e.labels) for e in s.exemplars) for s in series),
        symbols=0, metadata=len(request.metadata), buckets=sum(_bucket_entries(s.histograms) for s in series))


def oracle_v2(request: remote_v2_pb2.Request) -> prescan.WireCounts:
    series = request.timeseries
    refs = sum(len(s.labels_refs) + sum(len(e.labels_refs) for e in s.exemplars) for s in series)
    return prescan.WireCounts(
        series=len(series), samples=sum(len(s.samples) for s in series),
        histograms=sum(len(s.histograms) for s in series), exemplars=sum(len(s.exemplars) for s in series),
        labels=(refs + 1) // 2, symbols=len(request.symbols), metadata=sum(s.HasField("metadata") for s in series),
        buckets=sum(_bucket_entries(s.histograms) for s in series))


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(v1_requests())
def test_v1_scan_counts_equal_what_upb_decodes(request):
    payload = request.SerializeToString()
    counts, complete = prescan.scan(payload, Protocol.V1)
    assert complete
    assert counts == oracle_v1(remote_v1_pb2.WriteRequest.FromString(payload))


@FAST
@given(v2_requests())
def test_v2_scan_counts_equal_what_upb_decodes(request):
    payload = request.SerializeToString()
    counts, complete = prescan.scan(payload, Protocol.V2)
    assert complete
    assert counts == oracle_v2(remote_v2_pb2.Request.FromString(payload))


@st.composite
def mutated(draw, requests):
    payload = bytearray(draw(requests).SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, len(payload)))
        if action == "flip" and payload:
            payload[min(at, len(payload) - 1)] = draw(st.integers(0, 255))
        elif action == "cut":
            del payload[at:at + draw(st.integers(1, 8))]
        else:
            payload[at:at] = draw(st.binary(min_size=1, max_size=11))
    return bytes(payload)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([Protocol.V1, Protocol.V2]), st.data())
def test_scan_never_crashes_on_mutated_bytes(protocol, data):
    payload = data.draw(mutated(v1_requests() if protocol is Protocol.V1 else v2_requests()))
    try:
        counts, _ = prescan.scan(payload, protocol)
    except InvalidPayload as exc:
        assert exc.message.startswith("protobuf: ")
        return
    assert min(counts.series, counts.samples, counts.labels, counts.buckets) >= 0


@pytest.mark.parametrize("payload,problem", [
    (b"\x0a", "truncated varint"),
    (b"\x0a\x05\x00", "length past the end"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "varint"),
    (b"\x00\x00", "invalid field number"),
    (b"\x0b\x0c", "unsupported wire type"),
    (b"\x09\x00\x00", "truncated fixed-width"),
])
def test_malformed_wire_format_is_a_clear_400(payload, problem):
    with pytest.raises(InvalidPayload, match=problem):
        prescan.scan(payload, Protocol.V1)


@pytest.mark.parametrize("shape", list(hostile_bodies.SHAPES))
def test_each_hostile_shape_is_refused_with_413_naming_the_limit(shape):
    protocol, body = hostile_bodies.body(shape, 16 * 1024 * 1024)
    with pytest.raises(PayloadTooLarge, match=r"over the limit of --max-\w+-per-request"):
        codec.decode(body, protocol, 16 * 1024 * 1024, limits=prescan.RequestLimits())


def test_requests_within_the_limits_decode_as_before():
    request = remote_v1_pb2.WriteRequest()
    for i in range(100):
        series = request.timeseries.add()
        series.labels.add(name="__name__", value=f"m{i}")
        series.samples.add(value=1.0, timestamp=1)
    body = snappy_block.compress(request.SerializeToString())
    limits = prescan.RequestLimits(series=100, samples=100, labels=100, symbols=0, buckets=0)
    assert codec.decode(body, Protocol.V1, 1 << 20, limits=limits).counts.series == 100
    with pytest.raises(PayloadTooLarge, match="more than 99 series"):
        codec.decode(body, Protocol.V1, 1 << 20, limits=prescan.RequestLimits(series=99))
