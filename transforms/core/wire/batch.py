"""The columnar batch: one remote-write request decoded and validated by the compiled module in one pass.

Layout (see transforms/core/wire/_wire_decode.h):

- a series table, owned by whoever decodes (the receiver's Ingest, the pipeline's DoFn): label-set key
  (bytes) -> slot, and per slot the metric name, the labels as ((name, value), ...) of str and the archive
  line's JSON head (bytes). Made once per label set, reused by every later request;
- per series of the request: its slot (int32), and for 2.0 its metadata type (int32) and created
  timestamp (int64);
- per float sample: series index (uint32), timestamp (int64 ms), value (float64, bits as sent) and for 2.0
  its start timestamp (int64);
- side data: the series carrying histograms or exemplars, by index and by the byte range of their TimeSeries
  message in the payload (`side_series()` parses those messages alone, for the slower path, while every
  other series stays in the columns; their float samples are in the columns too), for 2.0 the byte range of
  each symbol (read only for the refs those series use), and 1.0 metadata as (metric family, type) pairs.

Columns are bytes; `column()` views them as typed memoryviews without copying.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np

from transforms.core.errors import InvalidPayload
from transforms.core.protocol import Protocol
from transforms.core.wire import _wire
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2
from transforms.core.wire.validation import Counts, NameValidation

WriteMessage = remote_v1_pb2.WriteRequest | remote_v2_pb2.Request
SideSeries = remote_v1_pb2.TimeSeries | remote_v2_pb2.TimeSeries


class PayloadSymbols:
    """A 2.0 request's symbols table read straight from the payload by the decoder's byte ranges: a symbol
    becomes a str only when asked for (the slower path needs the few its series refer to)."""

    def __init__(self, payload: bytes, spans: bytes) -> None:
        self._payload = payload
        self._spans = np.frombuffer(spans, np.int64).reshape(-1, 2)
        self._made: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._spans)

    def __getitem__(self, ref: int) -> str:
        found = self._made.get(ref)
        if found is None:
            start, length = self._spans[ref].tolist()
            found = self._made[ref] = self._payload[start:start + length].decode()  # UTF-8 checked by the decoder
        return found


class SeriesTable:
    """Label sets already validated under one name rule, with their strings and JSON heads.

    Replaced wholesale (new containers; batches keep the ones they were decoded with) once `limit`
    label sets are held. Safe to share between threads: the compiled decoder holds the GIL throughout.
    """

    def __init__(self, names: NameValidation = NameValidation.UTF8, limit: int = 200_000) -> None:
        self.validation = names
        self.limit = limit
        self.generation = 0
        self._renew()

    def _renew(self) -> None:
        self.slots: dict[bytes, int] = {}
        self.names: list[str] = []
        self.labels: list[tuple[tuple[str, str], ...]] = []
        self.heads: list[bytes] = []
        self.generation += 1

    def __len__(self) -> int:
        return len(self.names)

    def make_room(self) -> None:
        if len(self.names) >= self.limit:
            self._renew()


@dataclasses.dataclass(frozen=True, eq=False)
class Batch:
    protocol: Protocol
    payload: bytes
    counts: Counts
    names: list[str]  # the series table's containers this batch's slots index
    labels: list[tuple[tuple[str, str], ...]]
    heads: list[bytes]
    series_slot: bytes  # int32 per series
    sample_series: bytes  # uint32 per float sample
    timestamps: bytes  # int64 per float sample
    values: bytes  # float64 per float sample
    starts: bytes | None  # 2.0: int64 per float sample
    types: bytes | None  # 2.0: int32 per series
    created: bytes | None  # 2.0: int64 per series
    slow: list[int]  # series carrying histograms or exemplars (side data), ascending
    slow_spans: bytes  # int64 (start, end) per slow series: its TimeSeries message in the payload
    symbol_spans: bytes | None  # 2.0 with slow series: int64 (offset, length) per symbol in the payload
    families: list[tuple[str, int]] | None  # 1.0 metadata: (metric family, type number)

    @functools.cached_property
    def message(self) -> WriteMessage:
        """The protobuf message (upb), parsed on first use: histograms, exemplars, splitting."""
        message_type = remote_v1_pb2.WriteRequest if self.protocol is Protocol.V1 else remote_v2_pb2.Request
        return message_type.FromString(self.payload)

    def side_series(self) -> Iterator[tuple[int, SideSeries]]:
        """The slow series (histograms or exemplars), each parsed from its own bytes: (index, TimeSeries)."""
        series_type = remote_v1_pb2.TimeSeries if self.protocol is Protocol.V1 else remote_v2_pb2.TimeSeries
        spans = np.frombuffer(self.slow_spans, np.int64).reshape(-1, 2).tolist()
        payload = memoryview(self.payload)
        for index, (start, end) in zip(self.slow, spans, strict=True):
            yield index, series_type.FromString(payload[start:end])

    @functools.cached_property
    def symbols(self) -> PayloadSymbols:
        """2.0 with slow series: the request's symbols, read lazily from the payload."""
        if self.symbol_spans is None:
            raise ValueError("symbols are kept only for 2.0 batches with slow series")
        return PayloadSymbols(self.payload, self.symbol_spans)


_COLUMN_FORMATS = {"series_slot": "i", "sample_series": "I", "timestamps": "q", "values": "d", "starts": "q",
                   "types": "i", "created": "q"}


def column(batch: Batch, name: str) -> memoryview:
    """A column as a typed view (no copy): series_slot, sample_series, timestamps, values, ..."""
    data: Any = getattr(batch, name)
    return memoryview(data).cast(_COLUMN_FORMATS[name])


def decode(payload: bytes, protocol: Protocol, table: SeriesTable, samples_hint: int = 0) -> Batch:
    """Decode and validate an uncompressed payload; raises InvalidPayload (400) with validation.py's messages."""
    table.make_room()
    decoder = _wire.decode_v1 if protocol is Protocol.V1 else _wire.decode_v2
    names, labels, heads = table.names, table.labels, table.heads
    try:
        found = decoder(payload, table.slots, names, labels, heads,
                        table.validation is NameValidation.LEGACY, samples_hint)
    except ValueError as exc:
        raise InvalidPayload(str(exc)) from exc
    if found["error"] is not None:
        raise InvalidPayload(found["error"])
    counts = Counts(series=found["series"], samples=found["samples"], histograms=found["histograms"],
                    exemplars=found["exemplars"], metadata=found["metadata"])
    return Batch(protocol, payload, counts, names, labels, heads, found["series_slot"], found["sample_series"],
                 found["timestamps"], found["values"], found["starts"], found["types"], found["created"],
                 found["slow"], found["slow_spans"], found["symbol_spans"], found["families"])
