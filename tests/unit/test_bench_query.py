"""The pure parts of `make bench-query`: the generated data and the comparison of PromQL answers."""

from __future__ import annotations

import math

import numpy as np

from bench.query_data import BUCKETS, JOBS, SERIES_PER_TARGET, STALE_JOB, Workload
from bench.query_measure import difference
from transforms.core.protocol import STALE_NAN_BITS, float_bits
from transforms.core.wire import snappy_block
from transforms.core.wire.proto import remote_v1_pb2

T0 = 1_795_593_600_000  # 2026-11-25T08:00:00Z


def test_workload_sizes_and_moments() -> None:
    workload = Workload.of(200, 10, T0)
    assert workload.steps == 40 and workload.targets_per_job == 2
    assert len(workload.labels()) == 200 == len(JOBS) * 2 * SERIES_PER_TARGET
    assert len({tuple(sorted(s.items())) for s in workload.labels()}) == 200
    assert workload.instant_ms == T0 + 30 * 15_000
    # the marker lies within the 5-minute lookback of the instant, so only the marker hides the series
    assert 0 < workload.instant_ms - (T0 + workload.stale_step * 15_000) < 300_000
    assert Workload.of(10_000, 60, T0).samples() > 2_200_000


def test_bodies_carry_every_sample_once_and_end_the_stale_job_with_markers() -> None:
    workload = Workload.of(200, 10, T0)
    labels = workload.labels()
    seen: dict[tuple, list[tuple[int, float]]] = {}
    for stamp, body in workload.bodies():
        request = remote_v1_pb2.WriteRequest.FromString(snappy_block.decompress(body, 1 << 26))
        for series in request.timeseries:
            (sample,) = series.samples
            assert sample.timestamp == stamp
            seen.setdefault(tuple((label.name, label.value) for label in series.labels), []).append(
                (sample.timestamp, sample.value))
    assert sum(len(points) for points in seen.values()) == workload.samples()
    assert len(seen) == len(labels)
    for key, points in seen.items():
        stale = dict(key)["job"] == STALE_JOB
        assert len(points) == (workload.stale_step + 1 if stale else workload.steps)
        assert [t for t, _ in points] == [T0 + i * 15_000 for i in range(len(points))]
        assert (float_bits(points[-1][1]) == STALE_NAN_BITS) == stale
        assert not any(math.isnan(v) for _, v in (points[:-1] if stale else points))


def test_counters_grow_but_for_one_restart_and_buckets_add_up() -> None:
    workload = Workload.of(700, 10, T0)  # 7 instances per job: instance 3 restarts
    labels, values = workload.labels(), workload.values()
    restarted = 0
    for row, series in enumerate(labels):
        if series["__name__"] == "http_requests_total":
            drops = int(np.sum(np.diff(values[row]) < 0))
            assert drops <= 1
            restarted += drops
    assert restarted > 0
    target = [i for i, s in enumerate(labels) if s["instance"] == labels[0]["instance"] and s["job"] == "api"]
    buckets = values[[i for i in target if labels[i]["__name__"] == "request_duration_seconds_bucket"]]
    count = values[next(i for i in target if labels[i]["__name__"] == "request_duration_seconds_count")]
    assert len(buckets) == len(BUCKETS)
    assert np.all(np.diff(buckets, axis=0) >= 0)  # cumulative by le
    np.testing.assert_array_equal(buckets[-1], count)  # +Inf is the count


def _series(labels: dict, *values: str) -> dict:
    return {"metric": labels, "values": [[1000 + i * 30, v] for i, v in enumerate(values)]}


def test_difference_is_empty_only_for_the_same_answer() -> None:
    a = [_series({"job": "a"}, "1", "NaN", "+Inf"), _series({"job": "b"}, "2.5")]
    assert difference(a, [dict(s) for s in a], exact=True) == ""
    close = [_series({"job": "a"}, "1.0000000000001", "NaN", "+Inf"), _series({"job": "b"}, "2.5")]
    assert difference(a, close, exact=False) == ""
    assert difference(a, close, exact=True).startswith("1 values differ")
    far = [_series({"job": "a"}, "1.5", "NaN", "+Inf"), _series({"job": "b"}, "2.5")]
    assert "largest relative difference 0.333" in difference(a, far, exact=False)
    assert difference(a, [_series({"job": "a"}, "1", "1", "+Inf"), a[1]], exact=False)  # NaN is not 1
    assert difference(a, a[:1], exact=False) == "2 vs 1 series"
    assert "series differ" in difference(a, [a[0], _series({"job": "c"}, "2.5")], exact=False)
    shifted = [{"metric": {"job": "a"}, "values": [[1001, "1"], [1030, "NaN"], [1060, "+Inf"]]}, a[1]]
    assert difference(a, shifted, exact=False).startswith("timestamps differ")
    instant = [{"metric": {}, "value": [1000, "NaN"]}]
    assert difference(instant, [{"metric": {}, "value": [1000, "NaN"]}], exact=True) == ""
