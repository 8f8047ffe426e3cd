"""The shared codec: snappy, 1.0/2.0 round trips, content negotiation, spec validation, splitting."""

from __future__ import annotations

import math
import struct

import pytest

from transforms.core.errors import InvalidPayload, PayloadTooLarge, UnsupportedMediaType
from transforms.core.protocol import (
    CONTENT_TYPE_V2,
    STALE_NAN,
    STALE_NAN_BITS,
    Protocol,
    float_bits,
    is_stale_marker,
)
from transforms.core.wire import codec, snappy_block
from transforms.core.wire.builders import Series, build_v1, build_v2
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2
from transforms.core.wire.validation import NameValidation

MB = 1 << 20
ORDINARY_NAN = float("nan")


def series(name: str = "up", samples=((1000, 1.0),), **labels: str) -> Series:
    return Series(labels={"__name__": name, **labels}, samples=list(samples))


# --- snappy block format ---------------------------------------------------------------------

def test_snappy_round_trip_and_length_header():
    data = b"remote write " * 1000
    block = snappy_block.compress(data)
    assert snappy_block.uncompressed_length(block) == len(data)
    assert snappy_block.decompress(block, len(data)) == data


def test_snappy_bomb_is_refused_from_the_header_alone():
    # A header claiming 4 GiB followed by nothing: must be refused before decompressing.
    bomb = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) + b"\x00" * 10
    with pytest.raises(PayloadTooLarge, match="exceeds the limit"):
        snappy_block.decompress(bomb, 128 * MB)


def test_snappy_header_claiming_impossible_expansion_is_invalid():
    claim = 10 * MB
    header = bytearray()
    n = claim
    while n >= 0x80:
        header.append((n & 0x7F) | 0x80)
        n >>= 7
    header.append(n)
    with pytest.raises(InvalidPayload, match="impossible"):
        snappy_block.decompress(bytes(header) + b"\x00" * 100, 128 * MB)


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff\xff\xff\xff", b"\x05\x00", b"not snappy at all"])
def test_snappy_garbage_is_a_400(garbage):
    with pytest.raises(InvalidPayload):
        snappy_block.decompress(garbage, MB)


def test_framed_snappy_is_rejected():
    import snappy

    framed = snappy.StreamCompressor().add_chunk(build_v1([series()]).SerializeToString())
    with pytest.raises(InvalidPayload):
        codec.decode(framed, Protocol.V1, MB)


# --- content negotiation -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "content_type,expected",
    [
        (None, Protocol.V1),
        ("application/x-protobuf", Protocol.V1),
        ("application/x-protobuf;proto=prometheus.WriteRequest", Protocol.V1),
        ("application/x-protobuf; proto=io.prometheus.write.v2.Request", Protocol.V2),
        (CONTENT_TYPE_V2, Protocol.V2),
        ('Application/X-Protobuf;proto="io.prometheus.write.v2.Request"', Protocol.V2),
    ],
)
def test_protocol_from_content_type(content_type, expected):
    assert codec.protocol_for_content_type(content_type) is expected


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "application/x-protobuf;proto=foo.Bar"]
)
def test_unknown_content_type_is_415(content_type):
    with pytest.raises(UnsupportedMediaType):
        codec.protocol_for_content_type(content_type)


def test_content_encoding():
    codec.check_content_encoding("snappy")
    codec.check_content_encoding(None)
    with pytest.raises(UnsupportedMediaType):
        codec.check_content_encoding("gzip")


# --- 1.0 ---------------------------------------------------------------------------------------

def test_v1_round_trip_with_exemplars_histograms_and_metadata():
    request = build_v1(
        [
            Series({"__name__": "http_requests_total", "job": "api"}, [(1000, 1.0), (2000, 2.5)],
                   exemplars=[({"trace_id": "abc"}, 1500, 0.3)]),
            series("temperature", [(1000, -3.25)], room="a"),
        ],
        metadata=[Series({"__name__": "http_requests_total"}, metric_type="counter", help="Requests.")],
    )
    hist = request.timeseries.add()
    hist.labels.add(name="__name__", value="latency_seconds")
    hist.histograms.add(count_int=10, sum=3.5, schema=3, zero_threshold=1e-128, zero_count_int=1,
                        positive_spans=[remote_v1_pb2.BucketSpan(offset=0, length=2)],
                        positive_deltas=[4, 1], timestamp=3000)
    decoded = codec.decode(codec.encode(request), Protocol.V1, MB)
    assert decoded.message == request
    assert decoded.counts.series == 3
    assert decoded.counts.samples == 3
    assert decoded.counts.exemplars == 1
    assert decoded.counts.histograms == 1
    assert decoded.counts.metadata == 1
    assert decoded.message.metadata[0].type == remote_v1_pb2.MetricMetadata.COUNTER


def test_metadata_only_request_is_valid():
    request = build_v1([], metadata=[Series({"__name__": "up"}, metric_type="gauge")])
    assert codec.decode(codec.encode(request), Protocol.V1, MB).counts.metadata == 1


def test_empty_body_is_an_empty_valid_request():
    assert codec.decode(b"", Protocol.V1, MB).counts.series == 0


@pytest.mark.parametrize("value", [math.inf, -math.inf, 0.0, -0.0, 5e-324, 1.7976931348623157e308])
def test_special_values_survive_bit_exact(value):
    decoded = codec.decode(codec.encode(build_v1([series(samples=[(1, value)])])), Protocol.V1, MB)
    assert float_bits(decoded.message.timeseries[0].samples[0].value) == float_bits(value)


def test_stale_marker_is_kept_bit_exact_and_distinct_from_ordinary_nan():
    assert float_bits(STALE_NAN) == STALE_NAN_BITS
    assert is_stale_marker(STALE_NAN)
    assert not is_stale_marker(ORDINARY_NAN)
    assert not is_stale_marker(1.0)
    request = build_v1([series(samples=[(1, STALE_NAN)]), series("other", samples=[(1, ORDINARY_NAN)])])
    for protocol, message in ((Protocol.V1, request), (Protocol.V2, build_v2([
        series(samples=[(1, STALE_NAN)]), series("other", samples=[(1, ORDINARY_NAN)])
    ]))):
        decoded = codec.decode(codec.encode(message), protocol, MB).message
        stale, plain = (ts.samples[0].value for ts in decoded.timeseries)
        assert float_bits(stale) == STALE_NAN_BITS
        assert is_stale_marker(stale)
        assert math.isnan(plain) and not is_stale_marker(plain)
        assert float_bits(plain) == struct.unpack("<Q", struct.pack("<d", ORDINARY_NAN))[0]


def _v1_with_labels(*pairs: tuple[str, str]) -> bytes:
    request = remote_v1_pb2.WriteRequest()
    ts = request.timeseries.add()
    for name, value in pairs:
        ts.labels.add(name=name, value=value)
    ts.samples.add(value=1, timestamp=1)
    return codec.encode(request)


@pytest.mark.parametrize(
    "pairs,message",
    [
        ((("job", "a"), ("__name__", "up")), "not sorted"),
        ((("__name__", "up"), ("job", "a"), ("job", "b")), "duplicate label name"),
        ((("job", "a"),), "no __name__"),
        ((), "no labels"),
        ((("__name__", "up"), ("bad-name", "x")), "invalid label name"),
        ((("__name__", "9up"),), "invalid metric name"),
        ((("__name__", ""),), "invalid metric name"),
        ((("", "x"), ("__name__", "up")), "invalid label name"),
    ],
)
def test_v1_invalid_series_are_400(pairs, message):
    with pytest.raises(InvalidPayload, match=message):
        codec.decode(_v1_with_labels(*pairs), Protocol.V1, MB, NameValidation.LEGACY)


def test_utf8_name_validation_accepts_prometheus3_names_and_is_the_default():
    body = _v1_with_labels(("__name__", "http.requests"), ("service.name", "x"))
    with pytest.raises(InvalidPayload):
        codec.decode(body, Protocol.V1, MB, NameValidation.LEGACY)
    assert codec.decode(body, Protocol.V1, MB, NameValidation.UTF8).counts.samples == 1
    assert codec.decode(body, Protocol.V1, MB).counts.samples == 1  # the product's default, as the receiver's


def test_bad_protobuf_is_400():
    with pytest.raises(InvalidPayload, match="protobuf"):
        codec.decode(snappy_block.compress(b"\x0a\xff\xff\xff\x0f garbage"), Protocol.V1, MB)


# --- 2.0 ---------------------------------------------------------------------------------------

def test_v2_round_trip_with_metadata_exemplars_histograms_and_start_timestamps():
    request = build_v2([
        Series({"__name__": "http_requests_total", "job": "api"}, [(1000, 7.0)],
               exemplars=[({"trace_id": "t1"}, 1000, 0.5)], metric_type="counter", help="Requests.", unit=""),
        Series({"__name__": "queue_depth", "job": "api"}, [(1000, 3.0)], metric_type="gauge"),
    ])
    request.timeseries[0].samples[0].start_timestamp = 500
    request.timeseries[0].created_timestamp = 500
    hist = request.timeseries.add()
    hist.labels_refs.extend([list(request.symbols).index("__name__"), len(request.symbols)])
    request.symbols.append("latency_seconds")
    hist.histograms.add(count_float=2.0, sum=0.25, schema=-53, custom_values=[0.1, 1.0],
                        positive_spans=[remote_v2_pb2.BucketSpan(offset=0, length=2)],
                        positive_counts=[1.0, 1.0], timestamp=1000, start_timestamp=10,
                        reset_hint=remote_v2_pb2.Histogram.RESET_HINT_NO)
    decoded = codec.decode(codec.encode(request), Protocol.V2, MB)
    assert decoded.message == request
    assert decoded.message.symbols[0] == ""
    assert (decoded.counts.samples, decoded.counts.histograms, decoded.counts.exemplars) == (2, 1, 1)
    assert decoded.counts.metadata == 2
    assert decoded.message.timeseries[0].metadata.type == remote_v2_pb2.Metadata.METRIC_TYPE_COUNTER
    assert decoded.message.symbols[decoded.message.timeseries[0].metadata.help_ref] == "Requests."


def test_v1_body_read_as_v2_is_not_silently_accepted():
    # The 2.0 schema reserves fields 1-3, so a 1.0 body parses as an empty 2.0 request
    # carrying nothing; it must not be counted as data.
    decoded = codec.decode(codec.encode(build_v1([series()])), Protocol.V2, MB)
    assert decoded.counts.samples == 0 and decoded.counts.series == 0


def _v2(symbols, refs, samples=((1, 1.0),), histograms=0, meta=None) -> bytes:
    request = remote_v2_pb2.Request(symbols=symbols)
    ts = request.timeseries.add(labels_refs=refs)
    ts.samples.extend(remote_v2_pb2.Sample(timestamp=t, value=v) for t, v in samples)
    for _ in range(histograms):
        ts.histograms.add(count_int=1, timestamp=1)
    if meta:
        ts.metadata.help_ref, ts.metadata.unit_ref = meta
    return codec.encode(request)


@pytest.mark.parametrize(
    "body,message",
    [
        (_v2(["", "__name__", "up"], [1, 7]), "out of range"),
        (_v2(["", "__name__", "up"], [1, 2, 1]), "odd length"),
        (_v2(["x", "__name__", "up"], [1, 2]), "symbols\\[0\\]"),
        (_v2(["", "__name__", "up", "job"], [3, 2, 1, 2]), "not sorted"),
        (_v2(["", "__name__", "up"], [1, 2, 1, 2]), "duplicate"),
        (_v2(["", "job", "up"], [1, 2]), "no __name__"),
        (_v2(["", "__name__", "up"], [1, 2], samples=()), "at least one sample, histogram or exemplar"),
        (_v2(["", "__name__", "up"], [1, 2], histograms=1), "both samples and histograms"),
        (_v2(["", "__name__", "up"], [1, 2], meta=(99, 0)), "metadata symbol reference"),
    ],
)
def test_v2_invalid_requests_are_400(body, message):
    with pytest.raises(InvalidPayload, match=message):
        codec.decode(body, Protocol.V2, MB)


# --- splitting for Pub/Sub's message limit -------------------------------------------------------

@pytest.mark.parametrize("protocol,build", [(Protocol.V1, build_v1), (Protocol.V2, build_v2)])
def test_split_keeps_every_series_exactly_once(protocol, build):
    many = [series("m", samples=[(t, float(t)) for t in range(20)], idx=str(i), pad="x" * (i % 50))
            for i in range(300)]
    message = build(many)
    limit = len(codec.encode(message)) // 5
    parts = codec.split(message, protocol, limit)
    assert len(parts) >= 5
    assert all(len(p.body) <= limit for p in parts)
    seen = []
    for part in parts:
        decoded = codec.decode(part.body, protocol, MB)
        assert decoded.counts == part.counts
        for ts in decoded.message.timeseries:
            if protocol is Protocol.V1:
                labels = {lab.name: lab.value for lab in ts.labels}
            else:
                syms = decoded.message.symbols
                labels = {syms[ts.labels_refs[i]]: syms[ts.labels_refs[i + 1]]
                          for i in range(0, len(ts.labels_refs), 2)}
            seen.append((labels["idx"], [(s.timestamp, s.value) for s in ts.samples]))
    assert sorted(seen) == sorted((str(i), [(t, float(t)) for t in range(20)]) for i in range(300))


def test_split_refuses_a_single_series_over_the_limit():
    message = build_v1([series(samples=[(t, float(t)) for t in range(1000)])])
    with pytest.raises(PayloadTooLarge, match="single series"):
        codec.split(message, Protocol.V1, 100)


# --- the receiver's cached validation agrees with the plain one ------------------------------------

def test_cached_v1_validation_matches_plain_validation_and_never_caches_invalid_series():
    from tests.reference.validation import validate_v1, validate_v1_payload

    request = build_v1([
        Series({"__name__": "a", "x": str(i)}, [(t, 1.0) for t in range(i % 3 + 1)],
               exemplars=[({"trace_id": "t"}, 1, 1.0)] * (i % 2)) for i in range(50)
    ])
    request.timeseries[3].histograms.add(count_int=1, timestamp=5)
    payload = request.SerializeToString()
    for _ in range(2):  # cold cache, then warm
        assert validate_v1_payload(payload, request)[0] == validate_v1(request)
    bad = remote_v1_pb2.WriteRequest()
    bad.timeseries.extend(request.timeseries[:5])
    ts = bad.timeseries.add()
    ts.labels.add(name="z", value="1")
    ts.labels.add(name="__name__", value="b")
    for _ in range(2):  # the invalid series is rejected every time, with its index
        with pytest.raises(InvalidPayload, match="series 5: label names not sorted"):
            validate_v1_payload(bad.SerializeToString(), bad)


def test_the_validation_cache_has_an_owner_and_one_naming_mode():
    """The oracle's cache (tests/reference/validation.py's decode_with_upb) and the compiled decoder's series
    table (codec.decode) both belong to a caller: the owner remembers, no owner remembers nothing, one naming
    mode each."""
    from tests.reference.validation import ValidationCache, decode_with_upb
    from transforms.core.wire.batch import SeriesTable

    body = codec.encode(build_v1([Series({"__name__": "a", "x": str(i)}, [(1, 1.0)]) for i in range(5)]))
    owned = ValidationCache(NameValidation.UTF8)
    assert decode_with_upb(body, Protocol.V1, 1 << 20, cache=owned)[1].series == 5
    assert len(owned.series) == 5, "the owner remembers the validated label sets"
    other = ValidationCache(NameValidation.UTF8)
    decode_with_upb(body, Protocol.V1, 1 << 20)  # no owner: nothing is remembered anywhere
    assert len(other.series) == 0
    with pytest.raises(ValueError, match="cannot validate legacy names"):
        decode_with_upb(body, Protocol.V1, 1 << 20, NameValidation.LEGACY, cache=owned)

    table = SeriesTable(NameValidation.UTF8)
    assert codec.decode(body, Protocol.V1, 1 << 20, table=table).counts.series == 5
    assert len(table) == 5, "the owner remembers the validated label sets"
    another = SeriesTable(NameValidation.UTF8)
    codec.decode(body, Protocol.V1, 1 << 20)
    assert len(another) == 0
    with pytest.raises(ValueError, match="cannot validate legacy names"):
        codec.decode(body, Protocol.V1, 1 << 20, NameValidation.LEGACY, table=table)
