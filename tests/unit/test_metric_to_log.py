"""Metric-to-log: golden lines for every metric type and special value, types from metadata."""

from __future__ import annotations

import json
import math

import pytest

from tests.reference.metric_to_log import convert_v1, convert_v2
from transforms.core.archive.metric_to_log import ConversionError, Partition, encode_value
from transforms.core.metadata import MetadataStore, family_candidates
from transforms.core.protocol import STALE_NAN
from transforms.core.wire.builders import Series, build_v1, build_v2
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2

T0 = 1795597200123  # 2026-11-25T09:00:00.123Z
PROM_NAN = __import__("struct").unpack("<d", (0x7FF8000000000001).to_bytes(8, "little"))[0]


def lines_of(result: dict[Partition, list[str]]) -> list[str]:
    return [line for lines in result.values() for line in lines]


def test_golden_counter_line_matches_vector_shape():
    store = MetadataStore()
    request = build_v1([Series({"__name__": "http_requests_total", "job": "api", "instance": "a:9100"},
                               [(T0, 1027.0)])],
                       metadata=[Series({"__name__": "http_requests_total"}, metric_type="counter")])
    assert lines_of(convert_v1(request, "default", store)) == [
        '{"name":"http_requests_total","tags":{"instance":"a:9100","job":"api"},'
        '"timestamp":"2026-11-25T09:00:00.123Z","kind":"absolute","counter":{"value":1027.0}}'
    ]


@pytest.mark.parametrize(
    "family_type,name,kind",
    [
        ("counter", "http_requests_total", "counter"),
        ("gauge", "temperature", "gauge"),
        ("unknown", "untyped_thing", "gauge"),
        ("histogram", "latency_seconds_bucket", "counter"),
        ("histogram", "latency_seconds_sum", "counter"),
        ("histogram", "latency_seconds_count", "counter"),
        ("summary", "rpc_seconds", "gauge"),  # a quantile
        ("summary", "rpc_seconds_sum", "counter"),
        ("summary", "rpc_seconds_count", "counter"),
        ("gaugehistogram", "queue_bucket", "gauge"),
        ("info", "build_info", "gauge"),
        ("stateset", "feature", "gauge"),
        ("counter", "http_requests_created", "gauge"),
    ],
)
def test_every_metric_type_gets_its_kind(family_type, name, kind):
    family = family_candidates(name)[-1] if family_type in ("histogram", "summary", "gaugehistogram") else name
    store = MetadataStore()
    request = build_v1([Series({"__name__": name, "job": "j"}, [(T0, 2.5)])],
                       metadata=[Series({"__name__": family}, metric_type=family_type)])
    [line] = lines_of(convert_v1(request, "default", store))
    assert json.loads(line)[kind] == {"value": 2.5}


def test_1v0_metadata_is_remembered_per_tenant_across_requests():
    store = MetadataStore()
    convert_v1(build_v1([], metadata=[Series({"__name__": "jobs_total"}, metric_type="counter")]), "team-a", store)
    later = build_v1([Series({"__name__": "jobs_total"}, [(T0, 1.0)])])
    assert "counter" in json.loads(lines_of(convert_v1(later, "team-a", store))[0])
    # another tenant never said so: untyped -> gauge
    assert "gauge" in json.loads(lines_of(convert_v1(later, "team-b", store))[0])


def test_classic_histogram_and_summary_series_are_archived_sample_by_sample():
    store = MetadataStore()
    series = [Series({"__name__": "lat_bucket", "le": le}, [(T0, v), (T0 + 1000, v + 1)])
              for le, v in (("0.1", 1.0), ("1", 3.0), ("+Inf", 4.0))]
    series += [Series({"__name__": "lat_sum"}, [(T0, 2.5)]), Series({"__name__": "lat_count"}, [(T0, 4.0)])]
    series += [Series({"__name__": "rpc", "quantile": "0.99"}, [(T0, 0.2)])]
    request = build_v1(series, metadata=[Series({"__name__": "lat"}, metric_type="histogram"),
                                         Series({"__name__": "rpc"}, metric_type="summary")])
    lines = [json.loads(line) for line in lines_of(convert_v1(request, "default", store))]
    assert len(lines) == 9  # 3 buckets x 2 samples + sum + count + quantile: nothing collapsed
    assert sorted(line["tags"].get("le", "") for line in lines if line["name"] == "lat_bucket") == \
        ["+Inf", "+Inf", "0.1", "0.1", "1", "1"]
    assert [line["gauge"] for line in lines if line["name"] == "rpc"] == [{"value": 0.2}]


@pytest.mark.parametrize(
    "value,encoded",
    [
        (1027.0, "1027.0"),
        (-0.0, "-0.0"),
        (0.1, "0.1"),
        (1e300, "1e+300"),
        (5e-324, "5e-324"),
        (math.inf, '"+Inf"'),
        (-math.inf, '"-Inf"'),
        (STALE_NAN, '"StaleNaN"'),
        (PROM_NAN, '"NaN"'),
        (float("nan"), '"NaN:0x7ff8000000000000"'),
    ],
)
def test_special_values_are_lossless_and_distinguishable(value, encoded):
    assert encode_value(value) == encoded
    request = build_v1([Series({"__name__": "v"}, [(T0, value)])])
    [line] = lines_of(convert_v1(request, "default", MetadataStore()))
    assert f'"gauge":{{"value":{encoded}}}' in line
    json.loads(line)  # always valid JSON


def test_partitions_follow_each_samples_own_utc_time():
    old = T0 - 5 * 3600 * 1000  # five hours earlier
    request = build_v1([Series({"__name__": "up"}, [(old, 1.0), (T0, 1.0)])])
    result = convert_v1(request, "acme", MetadataStore())
    assert sorted(result) == [Partition("acme", "2026-11-25", "04"), Partition("acme", "2026-11-25", "09")]


def test_2v0_types_native_histograms_exemplars_and_start_timestamps():
    request = build_v2([Series({"__name__": "req_total", "job": "a"}, [(T0, 5.0)], metric_type="counter",
                               exemplars=[({"trace_id": "abc"}, T0 - 23, 0.75)])])
    request.timeseries[0].samples[0].start_timestamp = T0 - 60_000
    hist = request.timeseries.add(labels_refs=list(request.timeseries[0].labels_refs))
    hist.metadata.type = remote_v2_pb2.Metadata.METRIC_TYPE_HISTOGRAM
    hist.histograms.add(count_int=3, sum=1.5, schema=1, zero_threshold=0.001, zero_count_int=1,
                        positive_spans=[remote_v2_pb2.BucketSpan(offset=-1, length=2)], positive_deltas=[1, 0],
                        reset_hint=remote_v2_pb2.Histogram.RESET_HINT_NO, timestamp=T0, start_timestamp=T0 - 1000)
    assert lines_of(convert_v2(request, "default")) == [
        '{"name":"req_total","tags":{"job":"a"},"timestamp":"2026-11-25T09:00:00.123Z","kind":"absolute",'
        '"counter":{"value":5.0},"start_timestamp":"2026-11-25T08:59:00.123Z"}',
        '{"name":"req_total","tags":{"job":"a"},"timestamp":"2026-11-25T09:00:00.100Z","kind":"absolute",'
        '"exemplar":{"value":0.75,"labels":{"trace_id":"abc"}}}',
        '{"name":"req_total","tags":{"job":"a"},"timestamp":"2026-11-25T09:00:00.123Z","kind":"absolute",'
        '"native_histogram":{"count":3,"sum":1.5,"schema":1,"zero_threshold":0.001,"zero_count":1,'
        '"positive_spans":[[-1,2]],"positive_deltas":[1,0],"reset_hint":"no"},'
        '"start_timestamp":"2026-11-25T08:59:59.123Z"}',
    ]


def test_float_native_histogram_with_special_values_stays_valid_json():
    request = remote_v1_pb2.WriteRequest()
    ts = request.timeseries.add()
    ts.labels.add(name="__name__", value="h")
    ts.histograms.add(count_float=2.0, sum=math.inf, schema=-53, custom_values=[0.5, 1.0],
                      positive_spans=[remote_v1_pb2.BucketSpan(offset=0, length=2)], positive_counts=[1.0, 1.0],
                      reset_hint=remote_v1_pb2.Histogram.GAUGE, timestamp=T0)
    [line] = lines_of(convert_v1(request, "default", MetadataStore()))
    h = json.loads(line)["native_histogram"]
    assert h == {"count": 2.0, "sum": "+Inf", "schema": -53, "zero_threshold": 0.0, "zero_count": 0,
                 "positive_spans": [[0, 2]], "positive_counts": [1.0, 1.0], "custom_values": [0.5, 1.0],
                 "reset_hint": "gauge"}


def test_every_sample_is_kept_even_exact_duplicates():
    request = build_v1([Series({"__name__": "dup"}, [(T0, 1.0), (T0, 1.0), (T0, 2.0)])])
    assert len(lines_of(convert_v1(request, "default", MetadataStore()))) == 3


def test_unrepresentable_timestamp_is_a_conversion_error():
    request = build_v1([Series({"__name__": "far"}, [(2**62, 1.0)])])
    with pytest.raises(ConversionError):
        convert_v1(request, "default", MetadataStore())


def test_the_archive_keeps_labels_with_empty_values_as_received():
    """The archive is the record of what was received; sinks (live or restored) drop empty values."""
    v1 = build_v1([Series({"__name__": "m", "blank": "", "job": "a"}, [(T0, 1.0)])])
    v2 = build_v2([Series({"__name__": "m", "blank": "", "job": "a"}, [(T0, 1.0)])])
    for lines in (lines_of(convert_v1(v1, "default", MetadataStore())), lines_of(convert_v2(v2, "default"))):
        assert json.loads(lines[0])["tags"] == {"blank": "", "job": "a"}
