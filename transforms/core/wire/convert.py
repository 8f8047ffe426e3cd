"""Between the two remote-write versions, in protobuf: the series key, 1.0-shaped series to 2.0 and back.

The sinks and the restore keep series in 1.0's shape (`remote_v1_pb2.TimeSeries`) whatever they read;
2.0's start timestamps ride along as Sample field 3, an unknown field to 1.0 (see `samples_only`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from transforms.core.metadata import MetadataLookup
from transforms.core.protocol import METRIC_NAME_LABEL, ref_pairs
from transforms.core.wire.builders import SymbolTable
from transforms.core.wire.proto import remote_v1_pb2, remote_v1_view_pb2, remote_v2_pb2

TimeSeries = remote_v1_pb2.TimeSeries


def label_bytes(labels: Sequence[tuple[str, str]]) -> bytes:
    """A label set's 1.0 Label fields (a TimeSeries holding only them), as upb writes them: the series key."""
    return TimeSeries(labels=[remote_v1_pb2.Label(name=n, value=v) for n, v in labels]).SerializeToString()


def label_keys(payload: bytes) -> list[bytes]:
    """One exact label-set key per series of a 1.0 payload, computed in C."""
    view = remote_v1_view_pb2.WriteRequestLabels.FromString(payload)
    view.DiscardUnknownFields()
    return [s.SerializeToString() for s in view.timeseries]


def series_key(series: TimeSeries) -> bytes:
    """The same key for a series built in Python (labels only serialize like SeriesLabels)."""
    return TimeSeries(labels=series.labels).SerializeToString()


def samples_only(samples: Iterable[Any], carrier: Any) -> bytes:
    """The wire bytes of a series holding only these samples.

    Samples are field 2 of both 1.0's and 2.0's TimeSeries, and 2.0's Sample only adds field 3
    (`start_timestamp`), so these bytes merge into either version's TimeSeries. A 2.0 sample read
    into 1.0's Sample keeps its start timestamp as an unknown field, which protobuf preserves, and
    turning it back into 2.0 restores it: the internal 1.0 shape carries start timestamps from a
    2.0 input to a 2.0 sink without a field of its own, all in C (no Python object per sample).
    """
    carrier.samples.extend(samples)
    return carrier.SerializeToString()


def build_v2_request(series: Iterable[remote_v1_pb2.TimeSeries], lookup: MetadataLookup) -> remote_v2_pb2.Request:
    """2.0 from our 1.0-shaped series: a symbols table, and each series' family metadata attached to it."""
    table = SymbolTable()
    request = remote_v2_pb2.Request()
    for s in series:
        out = request.timeseries.add()
        name = ""
        for label in s.labels:  # already sorted by name (validated at the receiver, kept by the rules)
            out.labels_refs.extend((table.ref(label.name), table.ref(label.value)))
            if label.name == METRIC_NAME_LABEL:
                name = label.value
        if s.samples:
            out.MergeFromString(samples_only(s.samples, TimeSeries()))
        # Same field numbers for everything 1.0's histogram has, so the bytes carry over (start_timestamp too).
        out.histograms.extend(remote_v2_pb2.Histogram.FromString(h.SerializeToString()) for h in s.histograms)
        for ex in s.exemplars:
            refs = [r for lab in ex.labels for r in (table.ref(lab.name), table.ref(lab.value))]
            out.exemplars.add(labels_refs=refs, timestamp=ex.timestamp, value=ex.value)
        found = lookup(name)
        if found:
            out.metadata.type, help_text, unit = found[0], found[1], found[2]
            out.metadata.help_ref = table.ref(help_text)
            out.metadata.unit_ref = table.ref(unit)
    request.symbols.extend(table.symbols)
    return request


def v2_to_v1(request: remote_v2_pb2.Request) -> tuple[list[TimeSeries], list[remote_v1_pb2.MetricMetadata]]:
    """2.0 series in our internal 1.0 shape, and their metadata as 1.0 family entries.

    Start timestamps ride along as unknown fields (`samples_only` explains how), so a 2.0 sink
    gets them back. The older per-series `created_timestamp` (2.0 before rc.4) becomes the start
    timestamp of each sample and histogram that has none: rc.4 receivers no longer read field 6.
    """
    series_out, metadata = [], {}
    for s in request.timeseries:
        out, entry = v2_series_to_v1(s, request.symbols)
        if entry is not None:
            metadata[entry.metric_family_name] = entry
        series_out.append(out)
    return series_out, list(metadata.values())


def v2_series_to_v1(s: remote_v2_pb2.TimeSeries, symbols: Sequence[str]
                    ) -> tuple[TimeSeries, remote_v1_pb2.MetricMetadata | None]:
    """One 2.0 series (see v2_to_v1) and its metadata entry, if it has one."""
    out = TimeSeries()
    out.labels.extend(remote_v1_pb2.Label(name=n, value=v) for n, v in ref_pairs(s.labels_refs, symbols))
    if s.created_timestamp:
        for point in (*s.samples, *s.histograms):
            point.start_timestamp = point.start_timestamp or s.created_timestamp
    if s.samples:
        out.MergeFromString(samples_only(s.samples, remote_v2_pb2.TimeSeries()))
    out.histograms.extend(remote_v1_pb2.Histogram.FromString(h.SerializeToString()) for h in s.histograms)
    for ex in s.exemplars:
        e = out.exemplars.add(timestamp=ex.timestamp, value=ex.value)
        e.labels.extend(remote_v1_pb2.Label(name=n, value=v) for n, v in ref_pairs(ex.labels_refs, symbols))
    entry = None
    if s.HasField("metadata"):
        name = next((lab.value for lab in out.labels if lab.name == METRIC_NAME_LABEL), "")
        entry = remote_v1_pb2.MetricMetadata(type=s.metadata.type, metric_family_name=name,
                                             help=symbols[s.metadata.help_ref], unit=symbols[s.metadata.unit_ref])
    return out, entry
