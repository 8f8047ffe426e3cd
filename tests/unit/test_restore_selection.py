"""What a restore selects: PromQL selectors (anchored), times, partition pruning, records -> exact requests."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest

from tests.archive_samples import ODD_NAN, T0, records_of, sample_request
from tests.reference import metric_to_log
from transforms.core.archive.format import archive_format
from transforms.core.archive.records import record_samples
from transforms.core.metadata import TYPE_NUMBERS
from transforms.core.protocol import STALE_NAN, STALE_NAN_BITS, float_bits, ref_pairs
from transforms.core.restore.selection import Selection, SelectionError, parse_selector, parse_time, to_request
from transforms.core.sink.batching import merge
from transforms.core.wire import bodies
from transforms.core.wire.builders import Series, build_v2
from transforms.core.wire.convert import build_v2_request, label_bytes
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2


def keeps(selector: str, labels: dict[str, str]) -> bool:
    return Selection(selectors=(parse_selector(selector),)).keeps_series(labels)


def test_selectors_match_as_in_prometheus_with_anchored_regexes() -> None:
    cpu = {"__name__": "node_cpu_seconds_total", "job": "node", "mode": "idle"}
    assert keeps('{job="node",__name__=~"node_cpu.*"}', cpu)
    assert not keeps('{__name__=~"cpu.*"}', cpu)  # anchored: no substring match
    assert not keeps('{__name__=~"node_cpu"}', cpu)
    assert keeps('node_cpu_seconds_total{mode!="user"}', cpu)
    assert not keeps('{job="node",mode!~"idle|user"}', cpu)
    assert keeps('{job="node",instance=""}', cpu)  # a missing label equals ""
    assert not keeps('{job="node",instance!=""}', cpu)
    either = Selection(selectors=(parse_selector("up"), parse_selector('{mode="idle"}')))
    assert either.keeps_series(cpu) and not either.keeps_series({"__name__": "x"})


@pytest.mark.parametrize("bad", ['{job="node"', "rate(up[5m])", "up[5m]", "up offset 5m", '{a=~"("}', "{}"])
def test_a_bad_selector_is_one_clear_error(bad: str) -> None:
    with pytest.raises(SelectionError, match="--match"):
        parse_selector(bad)


def test_times_are_rfc3339_or_unix_seconds_and_checked() -> None:
    assert parse_time("2026-11-25T09:00:00Z", "--start") == T0
    assert parse_time("2026-11-25T10:00:00.5+01:00", "--start") == T0 + 500
    assert parse_time(str(T0 // 1000), "--start") == T0
    for bad in ("yesterday", "2026-11-25T09:00:00", "2026-13-01T00:00:00Z"):
        with pytest.raises(SelectionError, match="--start"):
            parse_time(bad, "--start")
    with pytest.raises(SelectionError, match="before --start"):
        Selection.parse("2026-11-25T09:00:00Z", "2026-11-25T08:00:00Z", None, None)


def test_a_date_alone_is_its_midnight_utc_and_a_missing_zone_says_how_to_add_one() -> None:
    assert parse_time("2026-11-25", "--start") == T0 - 9 * 3_600_000
    with pytest.raises(SelectionError, match=r"has no time zone; add Z .* e\.g\. 2026-11-25T09:00:00Z"):
        parse_time("2026-11-25T09:00:00", "--end")
    with pytest.raises(SelectionError, match=r"'soon': not a time; use .*2026-11-25 \(midnight UTC\)"):
        parse_time("soon", "--start")


def test_partitions_are_pruned_by_tenant_and_hour() -> None:
    window = Selection.parse("2026-11-25T09:30:00Z", "2026-11-25T10:00:00Z", ["a"], None)
    assert window.keeps_partition("a", "2026-11-25", "09") and window.keeps_partition("a", "2026-11-25", "10")
    assert not window.keeps_partition("a", "2026-11-25", "08") and not window.keeps_partition("a", "2026-11-25", "11")
    assert not window.keeps_partition("b", "2026-11-25", "09")
    assert Selection().keeps_partition("any", "not-a-date", "xx")  # not ours: read it, its records decide


def test_records_become_an_exact_request_with_histograms_exemplars_and_metadata() -> None:
    fmt = archive_format("parquet")
    restored = to_request(fmt.samples(fmt.encode(records_of(sample_request()))), Selection())
    ndjson = to_request(record_samples(json.loads(r) for r in records_of(sample_request())), Selection())
    def canonical(request: remote_v1_pb2.WriteRequest) -> set[bytes]:  # samples in time order, as the sink sends
        return {merge([s]).SerializeToString(deterministic=True) for s in request.timeseries}
    assert canonical(ndjson.request) == canonical(restored.request)  # both formats' paths alike
    by_name = {dict((lab.name, lab.value) for lab in s.labels)["__name__"]: s for s in restored.request.timeseries}
    counter = by_name["requests_total"]
    bits = [float_bits(s.value) for s in counter.samples]
    assert float_bits(STALE_NAN) in bits and float_bits(ODD_NAN) in bits and float_bits(-math.inf) in bits
    assert [(e.timestamp, e.value, e.labels[0].value) for e in counter.exemplars] == [(T0 + 7, 0.25, "abc")]
    original = {h.timestamp: h for h in sample_request().timeseries[2].histograms}
    for h in by_name["lat"].histograms:  # every field, NaN bits included, as the sender sent it
        assert h.SerializeToString(deterministic=True) == original[h.timestamp].SerializeToString(deterministic=True)
    assert restored.samples == 9 and (restored.first_ms, restored.last_ms) == (T0, T0 + 2000)
    types = {m.metric_family_name: m.type for m in restored.request.metadata}
    assert types == {"requests_total": 1, "up": 2, "lat": 3}  # counter, gauge, histogram


def test_the_selection_filters_series_and_time() -> None:
    records = [json.loads(r) for r in records_of(sample_request())]
    selection = Selection.parse(f"{(T0 + 1000) / 1000}", None, None, ['{__name__="up"}'])
    only = to_request(record_samples(records), selection)
    assert [(s.timestamp, s.value) for t in only.request.timeseries for s in t.samples] == [(T0 + 2000, 1.0)]
    assert isinstance(only.request, remote_v1_pb2.WriteRequest) and len(only.request.metadata) == 1


@pytest.mark.parametrize("name", ["parquet", "ndjson"])
@pytest.mark.parametrize("start, end, matches", [(None, None, None), (T0 + 1, T0 + 5, None),
                                                 (None, None, ['{__name__="requests_total"}'])])
def test_columns_give_the_request_its_samples_give(name, start, end, matches) -> None:
    """The restore reads both formats as columns (float rows never become Python objects): same request, same
    counts as the samples path (for NDJSON: json.loads of every line)."""
    fmt = archive_format(name)
    stored = fmt.encode(records_of(sample_request()))
    if name == "ndjson":
        stored = gzip.compress(stored)
    selection = Selection(start_ms=start, end_ms=end, selectors=tuple(parse_selector(m) for m in matches or ()))
    by_columns, by_samples = to_request(fmt.points(stored), selection), to_request(fmt.samples(stored), selection)

    def canonical(request: remote_v1_pb2.WriteRequest) -> tuple[set[bytes], bytes]:
        series = {merge([s]).SerializeToString(deterministic=True) for s in request.timeseries}
        return series, remote_v1_pb2.WriteRequest(metadata=request.metadata).SerializeToString(deterministic=True)
    assert by_columns.request.timeseries  # the selection keeps something
    assert canonical(by_columns.request) == canonical(by_samples.request)
    assert (by_columns.samples, by_columns.first_ms, by_columns.last_ms) == (
        by_samples.samples, by_samples.first_ms, by_samples.last_ms)


def test_metadata_records_give_type_help_and_unit_and_the_archived_kind_is_the_fallback() -> None:
    records = [json.loads(r) for r in records_of(sample_request())]
    known = {"lat": (TYPE_NUMBERS["histogram"], "Latency.", "seconds"),
             "requests": (TYPE_NUMBERS["summary"], "Requests, as a summary.", ""),  # covers requests_total
             "unrelated": (TYPE_NUMBERS["gauge"], "Not in this file.", "")}
    restored = to_request(record_samples(records), Selection(), known)
    assert [(m.metric_family_name, m.type, m.help, m.unit) for m in restored.request.metadata] == [
        ("lat", 3, "Latency.", "seconds"),
        ("requests", 5, "Requests, as a summary.", ""),  # the family's own name and exact type
        ("up", 2, "", ""),  # no record: the type the samples were archived as
    ]
    assert restored.starts is None  # no start timestamps: nothing for a 2.0 sink to carry


def start_request() -> remote_v2_pb2.Request:
    """2.0 with start timestamps on float samples and on a native histogram (which carries an exemplar)."""
    request = build_v2([Series({"__name__": "temp_celsius", "job": "a"}, [(T0, 21.5), (T0 + 1000, STALE_NAN)],
                               metric_type="gauge", help="Temperature.", unit="celsius"),
                        Series({"__name__": "lat", "job": "a"}, [(T0 + 5, 1.0)],
                               exemplars=[({"trace_id": "x"}, T0 + 2, 0.5)], metric_type="histogram")])
    request.timeseries[0].samples[0].start_timestamp = T0 - 60_000
    request.timeseries[1].samples[0].start_timestamp = T0 - 5_000
    request.timeseries[1].histograms.add(count_int=2, sum=0.75, schema=0, zero_count_int=0, positive_deltas=[2],
                                         positive_spans=[{"offset": 0, "length": 1}], timestamp=T0 + 2,
                                         start_timestamp=T0 - 30_000)
    return request


@pytest.mark.parametrize("path", ["ndjson", "ndjson-columns", "parquet-samples", "parquet-columns"])
def test_start_timestamps_ride_with_the_columns_and_the_slow_series_and_metadata_apart(path: str) -> None:
    lines = [r for rs in metric_to_log.convert_v2(start_request(), "t").values() for r in rs]
    if path == "ndjson":
        points = record_samples(json.loads(line) for line in lines)
    elif path == "ndjson-columns":
        points = archive_format("ndjson").points(gzip.compress(archive_format("ndjson").encode(lines)))
    else:
        fmt = archive_format("parquet")
        stored = fmt.encode(lines)
        points = fmt.samples(stored) if path == "parquet-samples" else fmt.points(stored)
    restored = to_request(points, Selection(), {"temp_celsius": (TYPE_NUMBERS["gauge"], "Temperature.", "celsius")})
    assert restored.starts is not None and [index for index, _ in restored.slow] == [restored.keys.index(
        label_bytes((("__name__", "lat"), ("job", "a"))))]
    # as a 2.0 sink's builder turns them into 2.0: the float series from columns, the slow one from protobuf
    float_ids = np.unique(restored.sample_series)
    floats = remote_v2_pb2.Request.FromString(bodies.encode_v2(
        restored.labels, {}, restored.sample_series, restored.timestamps, restored.values, restored.starts, 0,
        len(restored.timestamps)))
    slow = build_v2_request([series for _, series in restored.slow], lambda name: None)
    assert float_ids.tolist() == [restored.keys.index(label_bytes((("__name__", "temp_celsius"), ("job", "a"))))]

    def by_name(request: remote_v2_pb2.Request) -> dict[str, remote_v2_pb2.TimeSeries]:
        return {dict(ref_pairs(s.labels_refs, request.symbols))["__name__"]: s for s in request.timeseries}
    temp = by_name(floats)["temp_celsius"]
    assert [(s.timestamp, s.start_timestamp, float_bits(s.value)) for s in temp.samples] == [
        (T0, T0 - 60_000, float_bits(21.5)), (T0 + 1000, 0, STALE_NAN_BITS)]
    lat = by_name(slow)["lat"]  # with its histogram and exemplar in one series, every start timestamp kept
    assert [(s.timestamp, s.start_timestamp, s.value) for s in lat.samples] == [(T0 + 5, T0 - 5_000, 1.0)]
    expected = remote_v2_pb2.Histogram()
    expected.CopyFrom(start_request().timeseries[1].histograms[0])
    assert [h.SerializeToString(deterministic=True) for h in lat.histograms] == [
        expected.SerializeToString(deterministic=True)]
    assert [(e.timestamp, e.value) for e in lat.exemplars] == [(T0 + 2, 0.5)]
    metadata = restored.metadata  # 1.0 entries under the families' own names (a 2.0 sink attaches them itself)
    assert [(m.metric_family_name, m.type, m.help, m.unit) for m in metadata] == [
        ("lat", 3, "", ""), ("temp_celsius", 2, "Temperature.", "celsius")]
    assert restored.samples == 4 and len(restored.series) == 2
