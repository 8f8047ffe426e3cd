"""Sample requests and their archive records, shared by the archive-format and restore tests."""

from __future__ import annotations

import math
import struct

from tests.reference import metric_to_log
from transforms.core.metadata import MetadataStore
from transforms.core.protocol import STALE_NAN
from transforms.core.wire.builders import Series, build_v1
from transforms.core.wire.proto import remote_v1_pb2

T0 = 1_795_597_200_000  # 2026-11-25T09:00:00Z
ODD_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000ABC))[0]


def records_of(request: remote_v1_pb2.WriteRequest) -> list[str]:
    store = MetadataStore()
    store.update("t", {"requests_total": "counter"})
    return [r for rs in metric_to_log.convert_v1(request, "t", store).values() for r in rs]


def sample_request() -> remote_v1_pb2.WriteRequest:
    request = build_v1([
        Series({"__name__": "up", "job": "b"}, [(T0 + 2000, 1.0), (T0, math.inf)]),
        Series({"__name__": "requests_total", "job": "a", "x": "é"},
               [(T0 + 1000, STALE_NAN), (T0, 7.5), (T0 + 3, ODD_NAN), (T0 + 4, float("nan")), (T0 + 5, -math.inf)],
               exemplars=[({"trace_id": "abc"}, T0 + 7, 0.25)]),
    ])
    series = request.timeseries.add()
    series.labels.extend([remote_v1_pb2.Label(name="__name__", value="lat"),
                          remote_v1_pb2.Label(name="job", value="a")])
    series.histograms.add(count_int=5, sum=STALE_NAN, schema=3, zero_threshold=1e-128, zero_count_int=1,
                          negative_spans=[{"offset": -2, "length": 1}], negative_deltas=[1],
                          positive_spans=[{"offset": 0, "length": 2}, {"offset": 3, "length": 1}],
                          positive_deltas=[1, 1, -1], reset_hint=2, timestamp=T0)
    series.histograms.add(count_float=2.5, sum=1.5, schema=-53, zero_count_float=0.5, positive_counts=[1.0, math.nan],
                          custom_values=[0.1, 1.0], positive_spans=[{"offset": 0, "length": 2}], timestamp=T0 + 1)
    return request
