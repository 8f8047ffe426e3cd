"""Build remote-write 1.0 and 2.0 messages from plain Python values.

Used by the sinks (re-encoding), the benchmarks and the tests. Labels are sorted here,
as the specs require, so callers may pass them in any order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from transforms.core.metadata import TYPE_NUMBERS
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2


@dataclasses.dataclass
class Series:
    """One series: labels (including __name__), float samples as (timestamp_ms, value)."""

    labels: Mapping[str, str]
    samples: Sequence[tuple[int, float]] = ()
    exemplars: Sequence[tuple[Mapping[str, str], int, float]] = ()  # (labels, timestamp_ms, value)
    metric_type: str = "unknown"
    help: str = ""
    unit: str = ""


def build_v1(series: Iterable[Series], metadata: Iterable[Series] = ()) -> remote_v1_pb2.WriteRequest:
    """A 1.0 WriteRequest; `metadata` series contribute MetricMetadata entries (by __name__)."""
    request = remote_v1_pb2.WriteRequest()
    for s in series:
        ts = request.timeseries.add()
        ts.labels.extend(remote_v1_pb2.Label(name=k, value=v) for k, v in sorted(s.labels.items()))
        ts.samples.extend(remote_v1_pb2.Sample(timestamp=t, value=v) for t, v in s.samples)
        for labels, t, v in s.exemplars:
            ex = ts.exemplars.add(timestamp=t, value=v)
            ex.labels.extend(remote_v1_pb2.Label(name=k, value=val) for k, val in sorted(labels.items()))
    for s in metadata:
        request.metadata.add(
            type=TYPE_NUMBERS[s.metric_type],
            metric_family_name=s.labels["__name__"],
            help=s.help,
            unit=s.unit,
        )
    return request


class SymbolTable:
    """Interns strings for a 2.0 Request; index 0 is always the empty string."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {"": 0}

    def ref(self, value: str) -> int:
        return self._index.setdefault(value, len(self._index))

    def refs(self, labels: Mapping[str, str]) -> list[int]:
        out: list[int] = []
        for name, value in sorted(labels.items()):
            out += (self.ref(name), self.ref(value))
        return out

    @property
    def symbols(self) -> list[str]:
        return list(self._index)


def build_v2(series: Iterable[Series]) -> remote_v2_pb2.Request:
    """A 2.0 Request with per-series metadata and a shared symbols table."""
    table = SymbolTable()
    request = remote_v2_pb2.Request()
    for s in series:
        ts = request.timeseries.add()
        ts.labels_refs.extend(table.refs(s.labels))
        ts.samples.extend(remote_v2_pb2.Sample(timestamp=t, value=v) for t, v in s.samples)
        for labels, t, v in s.exemplars:
            ts.exemplars.add(labels_refs=table.refs(labels), timestamp=t, value=v)
        ts.metadata.type = TYPE_NUMBERS[s.metric_type]
        ts.metadata.help_ref = table.ref(s.help)
        ts.metadata.unit_ref = table.ref(s.unit)
    request.symbols.extend(table.symbols)
    return request
