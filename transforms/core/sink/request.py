"""Building what a sink receives: the body (1.0 or 2.0, snappy) and the headers the specs require."""

from __future__ import annotations

from collections.abc import Iterable

from transforms.core.metadata import MetadataLookup
from transforms.core.protocol import (
    CONTENT_ENCODING,
    CONTENT_TYPE_V1,
    CONTENT_TYPE_V2,
    HEADER_TENANT,
    HEADER_VERSION,
    VERSION_HEADER_V1,
    VERSION_HEADER_V2,
    Protocol,
)
from transforms.core.sink.config import SinkConfig
from transforms.core.wire.convert import build_v2_request
from transforms.core.wire.proto import remote_v1_pb2

USER_AGENT = "prometheus-remote-write-pipeline/0.1.0"


def headers_for(sink: SinkConfig, tenant: str | None, protocol: Protocol | None = None) -> dict[str, str]:
    """The user's extra headers first, then the tenant, then the reserved ones (which always win).

    Auth is not here: the HTTP service applies it just before each POST (transforms.io.sink_auth).

    `tenant` is the shard's tenant: the message's, or (with `tenant_label`) the one the builder routed to.
    `protocol` is what the driver currently speaks to this sink (a 2.0 sink may have fallen back to 1.0).
    """
    headers = dict(sink.headers)
    if sink.tenant_label:  # the builder already chose each series' tenant: its label's, or the fallback
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
    # Series that came in as 2.0 carry start timestamps as unknown fields (see
    # transforms.core.wire.convert.samples_only); 1.0 has no place for them.
    request.DiscardUnknownFields()
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
