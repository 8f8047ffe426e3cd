"""Between the two remote-write versions, in protobuf: the series key, 1.0-shaped series to 2.0.

The sinks and the restore keep series in 1.0's shape (`remote_v1_pb2.TimeSeries`) whatever they read;
2.0's start timestamps ride along as Sample field 3, an unknown field to 1.0 (see `samples_only`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from transforms.core.metadata import MetadataLookup
from transforms.core.protocol import METRIC_NAME_LABEL
from transforms.core.wire.builders import SymbolTable
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2

TimeSeries = remote_v1_pb2.TimeSeries


def label_bytes(labels: Sequence[tuple[str, str]]) -> bytes:
    """A label set's 1.0 Label fields (a TimeSeries holding only them), as upb writes them: the series key."""
    return TimeSeries(labels=[remote_v1_pb2.Label(name=n, value=v) for n, v in labels]).SerializeToString()


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
