"""Remote-write codec: content negotiation, snappy + protobuf decode/encode, splitting.

Pure functions shared by the receiver (validate, then publish the body as received) and
the pipeline (decode what the receiver published). No network, no Beam.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

from google.protobuf.message import DecodeError

from transforms.core.errors import InvalidPayload, PayloadTooLarge, UnsupportedMediaType
from transforms.core.protocol import CONTENT_ENCODING, MEDIA_TYPE, PROTO_V1, PROTO_V2, Protocol
from transforms.core.wire import prescan, snappy_block, validate_only
from transforms.core.wire.batch import Batch, SeriesTable
from transforms.core.wire.batch import decode as batch_decode
from transforms.core.wire.builders import SymbolTable
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2
from transforms.core.wire.validation import Counts, NameValidation

WriteMessage = remote_v1_pb2.WriteRequest | remote_v2_pb2.Request


@dataclasses.dataclass(frozen=True)
class DecodedRequest:
    """A validated remote-write request: its columnar batch (the protobuf message only when asked)."""

    protocol: Protocol
    batch: Batch
    counts: Counts
    uncompressed_bytes: int

    @property
    def message(self) -> WriteMessage:
        return self.batch.message


def protocol_for_content_type(content_type: str | None) -> Protocol:
    """Pick the message format from Content-Type (spec 2.0 content negotiation).

    `application/x-protobuf` alone means 1.0; `;proto=` names the message. A missing header
    is read as 1.0, as older 1.0 senders omit it. Anything else is 415.
    """
    if not content_type:
        return Protocol.V1
    media, *params = (part.strip() for part in content_type.split(";"))
    if media.lower() != MEDIA_TYPE:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}: expected {MEDIA_TYPE!r} "
            f"(optionally ;proto={PROTO_V1} or ;proto={PROTO_V2})"
        )
    protocol = Protocol.V1
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() != "proto":
            continue
        value = value.strip().strip('"')
        if value == PROTO_V1:
            protocol = Protocol.V1
        elif value == PROTO_V2:
            protocol = Protocol.V2
        else:
            raise UnsupportedMediaType(f"unsupported proto message {value!r} in Content-Type")
    return protocol


def check_content_encoding(content_encoding: str | None) -> None:
    """Only snappy is defined by the specs. Missing is read as snappy, as some 1.0 senders omit it."""
    if content_encoding and content_encoding.strip().lower() != CONTENT_ENCODING:
        raise UnsupportedMediaType(
            f"unsupported Content-Encoding {content_encoding!r}: only {CONTENT_ENCODING!r} is supported"
        )


def parse(payload: bytes, protocol: Protocol) -> WriteMessage:
    """Parse an uncompressed protobuf payload, turning any parse failure into a 400."""
    message_type = remote_v1_pb2.WriteRequest if protocol is Protocol.V1 else remote_v2_pb2.Request
    try:
        return message_type.FromString(payload)
    except DecodeError as exc:
        name = PROTO_V1 if protocol is Protocol.V1 else PROTO_V2
        raise InvalidPayload(f"protobuf: body is not a valid {name}: {exc}") from exc


def decode(
    body: bytes,
    protocol: Protocol,
    max_uncompressed: int,
    names: NameValidation = NameValidation.UTF8,  # the product's default (receiver --name-validation)
    limits: prescan.RequestLimits | None = None,
    table: SeriesTable | None = None,
) -> DecodedRequest:
    """Snappy-decompress, decode and validate a request body (compiled, one pass); raises RemoteWriteError.

    With limits, the payload's counts are checked (413) before anything is built for it. `table` is the
    caller's series table (label sets validated before are not validated again); without one, a fresh one.
    """
    payload = snappy_block.decompress(body, max_uncompressed)
    hint = prescan.check(payload, protocol, limits).samples if limits is not None else 0
    if table is None:
        table = SeriesTable(names)
    elif table.validation is not names:
        raise ValueError(f"a {table.validation} series table cannot validate {names} names")
    decoded = batch_decode(payload, protocol, table, hint)
    return DecodedRequest(protocol, decoded, decoded.counts, len(payload))


@dataclasses.dataclass(frozen=True, eq=False)
class ValidatedRequest:
    """A request validated without being decoded into columns (the receiver's): what it carries."""

    protocol: Protocol
    payload: bytes  # uncompressed
    counts: Counts

    @property
    def uncompressed_bytes(self) -> int:
        return len(self.payload)

    @functools.cached_property
    def message(self) -> WriteMessage:
        """The protobuf message (upb), parsed on first use: only to split a request too large to publish whole."""
        return parse(self.payload, self.protocol)


def validate(body: bytes, protocol: Protocol, max_uncompressed: int, limits: prescan.RequestLimits,
             known: validate_only.KnownLabelSets) -> ValidatedRequest:
    """Snappy-decompress and validate a request body in one walk under `limits`; raises RemoteWriteError as
    decode(..., limits=limits) would. `known`: the caller's label sets validated before (skipped)."""
    payload = snappy_block.decompress(body, max_uncompressed)
    return ValidatedRequest(protocol, payload, validate_only.validate(payload, protocol, known, limits))


def encode(message: WriteMessage) -> bytes:
    """Serialize and snappy-compress a message: a ready remote-write body."""
    return snappy_block.compress(message.SerializeToString())


@dataclasses.dataclass(frozen=True)
class Part:
    """One piece of a split request: a ready remote-write body and what it carries."""

    body: bytes
    counts: Counts


def split(message: WriteMessage, protocol: Protocol, max_compressed_bytes: int) -> list[Part]:
    """Split a request by series into encoded bodies of at most max_compressed_bytes each.

    Used when a request is too large for one Pub/Sub message. Every series, sample and
    metadata entry lands in exactly one part; a single series that alone exceeds the limit
    cannot be split and is refused (413) rather than truncated.
    """
    if protocol is Protocol.V1:
        build = _subset_v1
    else:
        build = _subset_v2
    indices = list(range(len(message.timeseries)))
    parts: list[Part] = []
    _split_into(message, indices, build, max_compressed_bytes, parts, first=True)
    return parts


def _split_into(
    message: WriteMessage,
    indices: list[int],
    build,
    limit: int,
    parts: list[Part],
    first: bool,
) -> None:
    subset = build(message, indices, first)
    encoded = encode(subset)
    if len(encoded) <= limit:
        parts.append(Part(encoded, count(subset)))
        return
    if len(indices) <= 1:
        raise PayloadTooLarge(
            f"a single series encodes to {len(encoded)} bytes, over the {limit}-byte message limit"
        )
    middle = len(indices) // 2
    _split_into(message, indices[:middle], build, limit, parts, first)
    _split_into(message, indices[middle:], build, limit, parts, False)


def _subset_v1(message: remote_v1_pb2.WriteRequest, indices: Sequence[int], with_metadata: bool):
    part = remote_v1_pb2.WriteRequest()
    part.timeseries.extend(message.timeseries[i] for i in indices)
    if with_metadata:
        part.metadata.extend(message.metadata)
    return part


def _subset_v2(message: remote_v2_pb2.Request, indices: Sequence[int], _first: bool):
    """A 2.0 request holding some series, with its own compact symbols table."""
    symbols = message.symbols
    table = SymbolTable()
    part = remote_v2_pb2.Request()

    def ref(old: int) -> int:
        return table.ref(symbols[old])

    for i in indices:
        series = part.timeseries.add()
        series.CopyFrom(message.timeseries[i])
        series.labels_refs[:] = [ref(r) for r in series.labels_refs]
        for exemplar in series.exemplars:
            exemplar.labels_refs[:] = [ref(r) for r in exemplar.labels_refs]
        if series.HasField("metadata"):
            series.metadata.help_ref = ref(series.metadata.help_ref)
            series.metadata.unit_ref = ref(series.metadata.unit_ref)
    part.symbols.extend(table.symbols)
    return part


def message_attributes(protocol: Protocol, tenant: str, received_at: str, counts: Counts) -> dict[str, str]:
    """The Pub/Sub attributes the receiver publishes with a request body (the pipeline reads them)."""
    return {
        "protocol": protocol.value,
        "tenant": tenant,
        "received_at": received_at,
        "samples": str(counts.samples),
        "histograms": str(counts.histograms),
        "exemplars": str(counts.exemplars),
    }


def count(message: WriteMessage) -> Counts:
    """What an already validated message carries, without validating it again."""
    series = message.timeseries
    if isinstance(message, remote_v1_pb2.WriteRequest):
        metadata = len(message.metadata)
    else:
        metadata = sum(1 for s in series if s.HasField("metadata"))
    return Counts(
        series=len(series),
        samples=sum(len(s.samples) for s in series),
        histograms=sum(len(s.histograms) for s in series),
        exemplars=sum(len(s.exemplars) for s in series),
        metadata=metadata,
    )
