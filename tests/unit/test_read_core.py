"""The remote-read core: matchers, request parsing, XOR chunks, sample and frame encodings, selection."""

from __future__ import annotations

import math
import random
import struct

import numpy as np
import pyarrow as pa
import pytest
import snappy

from tests.read_helpers import decode_xor_chunk, read_frames
from transforms.core.archive import parquet
from transforms.core.protocol import STALE_NAN, float_bits
from transforms.core.read import encode, select, xor
from transforms.core.read.matchers import EQ, NEQ, NRE, RE, make_matcher, required_name, series_matches
from transforms.core.read.request import SAMPLES, STREAMED_XOR_CHUNKS, ReadError, parse_read_request
from transforms.core.wire.proto import remote_read_pb2, remote_v1_pb2

ODD_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000ABC))[0]


def bits_of(values) -> list[int]:
    return np.asarray(values, np.float64).view(np.uint64).tolist()


@pytest.mark.parametrize(("kind", "value", "label", "expected"), [
    (EQ, "a", "a", True), (EQ, "a", "ab", False), (EQ, "", None, True), (EQ, "", "x", False),
    (NEQ, "a", "a", False), (NEQ, "a", None, True), (NEQ, "", None, False),
    (RE, "fo+", "foo", True), (RE, "fo+", "foobar", False), (RE, "fo+", "xfoo", False),
    (RE, "a|b", "ab", False), (RE, "a|b", "b", True), (RE, ".*", None, True), (RE, ".+", None, False),
    (RE, "foo", "foo\n", False),  # Go's $ is the end of text; Python's would accept a trailing newline
    (RE, ".", "\n", False), (RE, "\\p{L}+", "été", True), (RE, "(?i)ERR", "err", True),
    (RE, "(a+)+$", "a" * 30_000 + "b", False),  # linear time: Python's re would backtrack for ages
    (NRE, "fo+", "foo", False), (NRE, "fo+", "foobar", True), (NRE, ".+", None, True),
])
def test_matchers_follow_prometheus(kind, value, label, expected):
    labels = {} if label is None else {"job": label}
    assert series_matches([make_matcher(kind, "job", value)], "up", labels) is expected


def test_name_matcher_and_the_pinned_name():
    matchers = [make_matcher(RE, "__name__", "up|down"), make_matcher(EQ, "job", "a")]
    assert series_matches(matchers, "up", {"job": "a"})
    assert not series_matches(matchers, "upper", {"job": "a"})
    assert required_name(matchers) is None
    assert required_name([make_matcher(EQ, "__name__", "up")]) == "up"


def test_bad_matchers_are_clear_errors():
    with pytest.raises(ValueError, match="invalid regex"):
        make_matcher(RE, "job", "(")
    with pytest.raises(ValueError, match="invalid regex: invalid escape sequence"):
        make_matcher(RE, "job", "(a)\\1")  # backreferences: Go's regexp refuses them, so RE2 does
    with pytest.raises(ValueError, match="unknown type 7"):
        make_matcher(7, "job", "a")


def _request(accepted=(), start=0, end=10, matchers=((EQ, "__name__", "up"),)) -> bytes:
    message = remote_read_pb2.ReadRequest(accepted_response_types=list(accepted), queries=[
        remote_read_pb2.Query(start_timestamp_ms=start, end_timestamp_ms=end, matchers=[
            remote_read_pb2.LabelMatcher(type=k, name=n, value=v) for k, n, v in matchers],
            hints=remote_read_pb2.ReadHints(step_ms=5, func="rate"))])
    return snappy.compress(message.SerializeToString())


def test_request_parsing_and_response_type():
    assert parse_read_request(_request(), 1 << 20).response_type == SAMPLES
    assert parse_read_request(_request([STREAMED_XOR_CHUNKS, SAMPLES]), 1 << 20).response_type == STREAMED_XOR_CHUNKS
    with pytest.raises(ReadError, match="none of the accepted response types"):
        parse_read_request(_request([5]), 1 << 20)
    with pytest.raises(ReadError, match="after end_timestamp_ms"):
        parse_read_request(_request(start=20, end=10), 1 << 20)
    with pytest.raises(ReadError, match="query 0: .*invalid regex"):
        parse_read_request(_request(matchers=((RE, "job", "["),)), 1 << 20)
    with pytest.raises(ReadError, match="not a prometheus.ReadRequest"):
        parse_read_request(snappy.compress(b"\xff\xff\xff"), 1 << 20)
    with pytest.raises(ReadError, match="no queries"):
        parse_read_request(snappy.compress(b""), 1 << 20)


def _awkward_series(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = random.Random(seed)
    stamps, values, now = [], [], -5_000 if seed % 2 else 1_795_597_200_000
    specials = [STALE_NAN, ODD_NAN, float("nan"), math.inf, -math.inf, 0.0, -0.0, 5e-324, 1.7976931348623157e308]
    for i in range(count):
        now += rng.choice([15_000, 15_000, 15_001, 1, 8_193, 8_192, 65_537, 524_289, 10**12, rng.randrange(1, 10**6)])
        stamps.append(now)
        roll = rng.random()
        values.append(rng.choice(specials) if roll < 0.2 else float(i) if roll < 0.6 else rng.uniform(-1e9, 1e9))
    return np.array(stamps, np.int64), np.array(values, np.float64)


@pytest.mark.parametrize("seed", range(6))
def test_xor_chunks_decode_to_the_same_bits(seed):
    stamps, values = _awkward_series(301, seed)
    chunks = list(xor.encode_chunks(stamps, values))
    assert [c[:2] for c in chunks] == [(int(stamps[i]), int(stamps[min(i + 119, 300)])) for i in (0, 120, 240)]
    decoded = [point for _, _, data in chunks for point in decode_xor_chunk(data)]
    assert decoded == list(zip(stamps.tolist(), bits_of(values), strict=True))


def test_xor_dod_bucket_edges():
    # delta-of-delta on each side of every bucket edge (bitRange's asymmetric bounds)
    deltas = [1000]
    for width in (14, 17, 20):
        for edge in (1 << (width - 1), -((1 << (width - 1)) - 1)):
            for step in (-1, 0, 1):
                deltas.append(deltas[-1] + edge + step if deltas[-1] + edge + step > 0 else 1)
    stamps = np.cumsum(np.array([0, *deltas], np.int64)) + 10
    values = np.arange(len(stamps), dtype=np.float64)
    decoded = decode_xor_chunk(xor.encode_chunk(stamps.tolist(), bits_of(values)))
    assert [s for s, _ in decoded] == stamps.tolist()


def test_samples_field_keeps_value_bits():
    from transforms.core.wire.proto import remote_v1_pb2

    stamps, values = _awkward_series(500, 3)
    series = select.Series([("__name__", "up"), ("job", "a")], stamps, values)
    parsed = remote_v1_pb2.TimeSeries.FromString(encode.timeseries_bytes(series))
    assert [(lb.name, lb.value) for lb in parsed.labels] == series.labels
    assert [s.timestamp for s in parsed.samples] == stamps.tolist()
    assert bits_of([s.value for s in parsed.samples]) == bits_of(values)


def test_frames_carry_query_index_and_crc():
    stamps, values = _awkward_series(250, 0)
    series = [select.Series([("__name__", f"m{i}")], stamps, values) for i in range(3)]
    frames = read_frames(b"".join(encode.chunked_frames(2, series)))
    assert [f.query_index for f in frames] == [2]
    got = frames[0].chunked_series
    assert [s.labels[0].value for s in got] == ["m0", "m1", "m2"]
    assert all(c.type == remote_read_pb2.Chunk.XOR for c in got[0].chunks)
    corrupt = bytearray(b"".join(encode.chunked_frames(0, series)))
    corrupt[-1] ^= 1
    with pytest.raises(AssertionError, match="CRC32C"):
        read_frames(bytes(corrupt))


def test_partitions_overlapping_the_range():
    t0 = 1_795_597_200_000  # 2026-11-25T09:00:00Z
    assert select.partition_start_ms("date=2026-11-25") == t0 - 9 * select.HOUR_MS
    assert select.partition_start_ms("date=2026-11-25", "hour=09") == t0
    for bad in (("date=2026-13-01", None), ("date=x", None), ("date=2026-11-25", "hour=24"),
                ("date=2026-11-25", "hour=9"), ("date=2026-11-25", "minute=09"), ("tenant=a", None)):
        assert select.partition_start_ms(*bad) is None, bad
    nine = select.partition_start_ms("date=2026-11-25", "hour=09")
    assert select.overlaps(nine, select.HOUR_MS, t0 - 1, t0)  # ends at its first millisecond
    assert select.overlaps(nine, select.HOUR_MS, t0 + 3_599_999, t0 + 9_999_999)
    assert not select.overlaps(nine, select.HOUR_MS, t0 + 3_600_000, t0 + 9_999_999)
    assert not select.overlaps(nine, select.HOUR_MS, 0, t0 - 1)
    assert not select.overlaps(None, select.HOUR_MS, 0, t0)


def _table(rows) -> pa.Table:
    import json
    lines = [json.dumps({"name": n, "tags": tags, "timestamp": stamp, "kind": "absolute", "gauge": {"value": v}})
             for n, tags, stamp, v in rows]
    return parquet.encode_table(lines).select(select.COLUMNS)


def test_select_series_matches_dedups_and_keeps_special_bits():
    rows = [("up", {"job": "a"}, "2026-11-25T09:00:01.000Z", 1.0), ("up", {"job": "a"}, "2026-11-25T09:00:00.000Z",
             "StaleNaN"), ("up", {"job": "b"}, "2026-11-25T09:00:00.000Z", "NaN:0x7ff8000000000abc"),
            ("down", {"job": "a"}, "2026-11-25T09:00:00.000Z", 3.0)]
    table = pa.concat_tables([_table(rows), _table(rows[:1])])  # one sample archived twice
    found = select.select_series(table, [make_matcher(EQ, "__name__", "up")])
    assert [s.labels for s in found] == [[("__name__", "up"), ("job", "a")], [("__name__", "up"), ("job", "b")]]
    assert found[0].timestamps.tolist() == [1_795_597_200_000, 1_795_597_201_000]
    assert bits_of(found[0].values) == [float_bits(STALE_NAN), float_bits(1.0)]
    assert bits_of(found[1].values) == [0x7FF8000000000ABC]
    collector = select.SeriesCollector([make_matcher(NRE, "job", "a")])
    for part in (table.slice(0, 2), table.slice(2)):  # batch by batch, as the archive is read
        collector.add(part)
    (kept,) = collector.series()
    assert kept.labels == [("__name__", "up"), ("job", "b")] and collector.samples == 1


@pytest.mark.parametrize("slice_size", [1 << 16, 100])
def test_query_result_cuts_samples_between_series(slice_size, monkeypatch):
    monkeypatch.setattr(encode, "SAMPLES_PER_SLICE", slice_size)
    rng = np.random.default_rng(7)
    series = [select.Series([("__name__", f"m{i}")], np.sort(rng.choice(2**40, size, replace=False)).astype(np.int64),
                            rng.normal(size=size)) for i, size in enumerate((1, 300, 7, 1000))]
    series[2].timestamps[0] = -5  # a negative time is a 10-byte varint
    series[1].labels.append(("zone", ""))  # an empty value: protobuf leaves the field out
    encoded = encode.query_result_bytes(series)
    # byte for byte as protobuf writes it, whatever the series' length (1-, 2- and 3-byte length prefixes)
    assert encoded == remote_read_pb2.QueryResult(timeseries=[
        remote_v1_pb2.TimeSeries(labels=[remote_v1_pb2.Label(name=n, value=v) for n, v in one.labels],
                                 samples=[remote_v1_pb2.Sample(value=v, timestamp=t) for t, v in
                                          zip(one.timestamps.tolist(), one.values.tolist(), strict=True)])
        for one in series]).SerializeToString()
    parsed = remote_read_pb2.QueryResult.FromString(encoded)
    for got, sent in zip(parsed.timeseries, series, strict=True):
        assert got.labels[0].value == sent.labels[0][1]
        assert [s.timestamp for s in got.samples] == sent.timestamps.tolist()
        assert bits_of([s.value for s in got.samples]) == bits_of(sent.values)


def test_series_keys_are_injective_whatever_the_label_text():
    rows = [("up", {"a": "x\x00", "b": "y"}, "2026-11-25T09:00:00.000Z", 1.0),
            ("up", {"a": "x", "b": "\x00y"}, "2026-11-25T09:00:00.000Z", 2.0),
            ("up", {"a": "x\xff\xfe", "b": "y"}, "2026-11-25T09:00:00.000Z", 3.0)]
    found = select.select_series(_table(rows), [])
    assert sorted(s.values[0] for s in found) == [1.0, 2.0, 3.0]
