"""Decoding a remote-read request and choosing the response type; every refusal is a ReadError (4xx)."""

from __future__ import annotations

import dataclasses

from google.protobuf.message import DecodeError

from transforms.core.errors import RemoteWriteError
from transforms.core.read.matchers import Matcher, compile_matchers
from transforms.core.wire import snappy_block
from transforms.core.wire.proto import remote_read_pb2

SAMPLES = remote_read_pb2.ReadRequest.SAMPLES
STREAMED_XOR_CHUNKS = remote_read_pb2.ReadRequest.STREAMED_XOR_CHUNKS
CONTENT_TYPE_SAMPLES = "application/x-protobuf"
CONTENT_TYPE_STREAMED = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"


class ReadError(RemoteWriteError):
    """A read request that cannot be answered as asked (400 unless a subclass says otherwise)."""


class LimitExceeded(ReadError):
    """A query or response over a configured limit: 422, so the client sees the limit and does not retry."""

    status = 422


@dataclasses.dataclass(frozen=True)
class ReadQuery:
    start_ms: int
    end_ms: int
    matchers: tuple[Matcher, ...]


@dataclasses.dataclass(frozen=True)
class ReadPlan:
    queries: tuple[ReadQuery, ...]
    response_type: int  # SAMPLES or STREAMED_XOR_CHUNKS


def choose_response_type(accepted: list[int]) -> int:
    """The first type the client accepts that we serve; an empty list means SAMPLES (the 0.1.0 protocol)."""
    if not accepted:
        return SAMPLES
    for kind in accepted:
        if kind in (SAMPLES, STREAMED_XOR_CHUNKS):
            return kind
    raise ReadError(f"none of the accepted response types {list(accepted)} is served "
                    f"(SAMPLES={SAMPLES}, STREAMED_XOR_CHUNKS={STREAMED_XOR_CHUNKS})")


def parse_read_request(body: bytes, max_decompressed_bytes: int) -> ReadPlan:
    """A snappy-compressed prometheus.ReadRequest -> the queries to run (hints are ignored)."""
    payload = snappy_block.decompress(body, max_decompressed_bytes)
    request = remote_read_pb2.ReadRequest()
    try:
        request.ParseFromString(payload)
    except DecodeError as exc:
        raise ReadError(f"body is not a prometheus.ReadRequest: {exc}") from exc
    if not request.queries:
        raise ReadError("ReadRequest has no queries")
    queries = []
    for index, query in enumerate(request.queries):
        if query.start_timestamp_ms > query.end_timestamp_ms:
            raise ReadError(f"query {index}: start_timestamp_ms {query.start_timestamp_ms} "
                            f"is after end_timestamp_ms {query.end_timestamp_ms}")
        try:
            matchers = compile_matchers(query.matchers)
        except ValueError as exc:
            raise ReadError(f"query {index}: {exc}") from exc
        queries.append(ReadQuery(query.start_timestamp_ms, query.end_timestamp_ms, matchers))
    return ReadPlan(tuple(queries), choose_response_type(list(request.accepted_response_types)))
