"""Building what a sink receives: the body (1.0 or 2.0, snappy) and the headers the specs require."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from transforms.core.protocol import (
    CONTENT_ENCODING,
    CONTENT_TYPE_V1,
    CONTENT_TYPE_V2,
    HEADER_TENANT,
    HEADER_VERSION,
    METRIC_NAME_LABEL,
    VERSION_HEADER_V1,
    VERSION_HEADER_V2,
    Protocol,
)
from transforms.core.sink.config import SinkConfig
from transforms.core.wire.builders import SymbolTable
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2

USER_AGENT = "prometheus-remote-write-pipeline/0.1.0"

# (type number, help, unit) of a metric family, for 2.0's per-series metadata.
FamilyMetadata = tuple[int, str, str]
MetadataLookup = Callable[[str], FamilyMetadata | None]


def headers_for(sink: SinkConfig, tenant: str | None, protocol: Protocol | None = None) -> dict[str, str]:
    """The user's extra headers first, then the tenant, then the reserved ones (which always win).

    Auth is not here: the HTTP service applies it just before each POST (transforms.io.sink_auth).

    `tenant` is the shard's tenant: the message's, or (with `tenant_label`) the one the forwarder routed to.
    `protocol` is what the forwarder currently speaks to this sink (a 2.0 sink may have fallen back to 1.0).
    """
    headers = dict(sink.headers)
    if sink.tenant_label:  # the forwarder already chose each series' tenant: its label's, or the fallback
        chosen = tenant
    else:
        chosen = sink.tenant or (tenant if sink.tenant_header == "forward" else None)
    if chosen:
        headers[HEADER_TENANT] = chosen
    v2 = (protocol or sink.protocol) is Protocol.V2
    headers.update({
        "Content-Encoding": CONTENT_ENCODING,
        "Content-Type": CONTENT_TYPE_V2 if v2 else CONTENT_TYPE_V1,
        HEADER_VERSION: VERSION_HEADER_V2 if v2 else VERSION_HEADER_V1,
        "User-Agent": USER_AGENT,
    })
    return headers


def build_v1_request(series: Iterable[remote_v1_pb2.TimeSeries],
                     metadata: Iterable[remote_v1_pb2.MetricMetadata] = ()) -> remote_v1_pb2.WriteRequest:
    request = remote_v1_pb2.WriteRequest()
    request.timeseries.extend(series)
    request.metadata.extend(metadata)
    # Series that came in as 2.0 carry start timestamps as unknown fields (see samples_with_start_timestamps);
    # 1.0 has no place for them.
    request.DiscardUnknownFields()
    return request


TimeSeries = remote_v1_pb2.TimeSeries


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


def encode_payload(protocol: Protocol, series: list[remote_v1_pb2.TimeSeries],
                   metadata: Iterable[remote_v1_pb2.MetricMetadata], lookup: MetadataLookup) -> bytes:
    """The uncompressed body of protobuf series (the path for histograms and exemplars)."""
    if protocol is Protocol.V2:
        return build_v2_request(series, lookup).SerializeToString()
    return build_v1_request(series, metadata).SerializeToString()


def metadata_payload(metadata: Iterable[remote_v1_pb2.MetricMetadata]) -> bytes:
    """1.0 metadata entries as WriteRequest bytes: appended to a request's series bytes, they merge into it."""
    return remote_v1_pb2.WriteRequest(metadata=list(metadata)).SerializeToString()
