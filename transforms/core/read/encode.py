"""Response bodies: SAMPLES (one ReadResponse, snappy by the caller) and STREAMED_XOR_CHUNKS frames.

Samples are encoded with numpy, a whole series at a time: every prometheus.Sample is
`0x09 <8-byte double> 0x10 <varint timestamp>`, so the value bits pass through untouched (stale markers
and NaN payloads come back bit for bit) and no Python object is made per sample.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence

import google_crc32c
import numpy as np

from transforms.core.read.select import Series
from transforms.core.read.xor import chunk_fields

# Prometheus keeps each streamed frame near 1 MiB; a frame holds whole series up to about that size.
FRAME_TARGET_BYTES = 1 << 20
SAMPLES_PER_SLICE = 1 << 16


def varint(number: int) -> bytes:
    out = bytearray()
    number &= (1 << 64) - 1
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _field_head(number, len(payload)) + payload


def _field_head(number: int, size: int) -> bytes:
    """A length-delimited field's key and length."""
    if number < 16 and size < 0x4000:  # one key byte, a one- or two-byte length: every label, most series
        if size < 0x80:
            return bytes((number << 3 | 2, size))
        return bytes((number << 3 | 2, size & 0x7F | 0x80, size >> 7))
    return varint(number << 3 | 2) + varint(size)


def _varints(numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each uint64 as a base-128 varint: a (n, 10) byte matrix and each row's length."""
    numbers = numbers.astype(np.uint64)
    groups = (numbers[:, None] >> (np.arange(10, dtype=np.uint64) * np.uint64(7))) & np.uint64(0x7F)
    lengths = np.ones(len(numbers), np.int64)
    for i in range(1, 10):
        lengths += (numbers >> np.uint64(7 * i)) > 0
    more = np.arange(10)[None, :] < (lengths[:, None] - 1)
    return (groups | (more * 0x80).astype(np.uint64)).astype(np.uint8), lengths


def samples_field(timestamps: np.ndarray, values: np.ndarray) -> bytes:
    """`repeated Sample samples = 2` of a TimeSeries, for every sample of a series."""
    return _encoded_samples(timestamps, values)[0]


def _encoded_samples(timestamps: np.ndarray, values: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The samples' fields, and each one's encoded length (to cut the bytes between series); in slices, as
    the working matrices take about 130 bytes per sample."""
    if len(timestamps) > SAMPLES_PER_SLICE:
        slices = [_encoded_samples(timestamps[i:i + SAMPLES_PER_SLICE], values[i:i + SAMPLES_PER_SLICE])
                  for i in range(0, len(timestamps), SAMPLES_PER_SLICE)]
        return b"".join(part for part, _ in slices), np.concatenate([lengths for _, lengths in slices])
    count = len(timestamps)
    stamps = timestamps.view(np.uint64)
    if count and _varint_length(int(stamps.min())) == _varint_length(int(stamps.max())):
        return _same_length_samples(stamps, values, _varint_length(int(stamps.min())))
    stamp_bytes, stamp_lengths = _varints(stamps)
    rows = np.zeros((count, 2 + 1 + 8 + 1 + 10), np.uint8)
    rows[:, 0] = 0x12  # field 2 (samples), length-delimited
    rows[:, 1] = 1 + 8 + 1 + stamp_lengths  # a Sample is at most 20 bytes: its length is one byte
    rows[:, 2] = 0x09  # field 1 (value), fixed64
    rows[:, 3:11] = values.astype("<f8").view(np.uint8).reshape(count, 8)
    rows[:, 11] = 0x10  # field 2 (timestamp), varint
    rows[:, 12:] = stamp_bytes
    used = np.arange(rows.shape[1])[None, :] < (12 + stamp_lengths)[:, None]
    return rows[used].tobytes(), 12 + stamp_lengths


def _varint_length(number: int) -> int:
    return max(1, -(-number.bit_length() // 7))


def _same_length_samples(stamps: np.ndarray, values: np.ndarray, length: int) -> tuple[bytes, np.ndarray]:
    """_encoded_samples when every timestamp's varint has `length` bytes (any query of less than ~3 years since
    1970 + 2^41 ms): fixed-width rows, built a column at a time, with no mask."""
    count = len(stamps)
    rows = np.empty((count, 12 + length), np.uint8)
    rows[:, 0] = 0x12
    rows[:, 1] = 1 + 8 + 1 + length
    rows[:, 2] = 0x09
    rows[:, 3:11] = values.astype("<f8").view(np.uint8).reshape(count, 8)
    rows[:, 11] = 0x10
    for i in range(length):
        group = (stamps >> np.uint64(7 * i)) & np.uint64(0x7F)
        rows[:, 12 + i] = group | np.uint64(0x80) if i < length - 1 else group
    return rows.tobytes(), np.full(count, 12 + length, np.int64)


@functools.lru_cache(maxsize=1 << 16)
def _label_bytes(name: str, value: str) -> bytes:
    """One `Label labels = 1` field of a TimeSeries; label pairs repeat across series and requests."""
    return _field(1, (_field(1, name.encode()) if name else b"") + (_field(2, value.encode()) if value else b""))


def _labels_field(labels: Iterable[tuple[str, str]]) -> bytes:
    """`repeated Label labels = 1` of a TimeSeries (as protobuf serializes it: an empty string field is left
    out)."""
    return _label_set_bytes(tuple(labels))


@functools.lru_cache(maxsize=1 << 14)
def _label_set_bytes(labels: tuple[tuple[str, str], ...]) -> bytes:
    """A series' label fields, kept for the series the next requests ask for again (about 10 MiB at most; the
    label strings themselves are shared with the series caches)."""
    return b"".join(_label_bytes(n, v) for n, v in labels)


def timeseries_bytes(series: Series) -> bytes:
    return _labels_field(series.labels) + samples_field(series.timestamps, series.values)


def query_result_bytes(series: Sequence[Series]) -> bytes:
    """A QueryResult (`repeated TimeSeries timeseries = 1`). The samples of all series are encoded in one
    numpy pass, then cut at each series' end."""
    if not series:
        return b""
    samples, lengths = _encoded_samples(np.concatenate([s.timestamps for s in series]),
                                        np.concatenate([s.values for s in series]))
    ends = np.cumsum(lengths)[np.cumsum([len(s.timestamps) for s in series]) - 1].tolist()
    parts: list[bytes | memoryview] = []
    view, start = memoryview(samples), 0
    for one, end in zip(series, ends, strict=True):
        labels = _labels_field(one.labels)
        parts += (_field_head(1, len(labels) + end - start), labels, view[start:end])  # joined once, at the end
        start = end
    return b"".join(parts)


def read_response_bytes(results: Iterable[bytes]) -> bytes:
    """A ReadResponse from encoded QueryResults, one per query in order (`repeated QueryResult results = 1`)."""
    return b"".join(_field(1, result) for result in results)


def frame(message: bytes) -> bytes:
    """One frame of a streamed response: uvarint length, CRC32-Castagnoli (big-endian), the message."""
    return varint(len(message)) + google_crc32c.value(message).to_bytes(4, "big") + message


def chunked_frames(query_index: int, series: Iterable[Series]) -> Iterator[bytes]:
    """ChunkedReadResponse frames for one query's series, whole series per frame, each near FRAME_TARGET_BYTES."""
    pending: list[bytes] = []
    size = 0
    for one in series:
        # a ChunkedSeries: its labels as a TimeSeries' (field 1, the same Label message), then its chunks
        encoded = _field(1, _labels_field(one.labels) + chunk_fields(one.timestamps, one.values))
        if pending and size + len(encoded) > FRAME_TARGET_BYTES:
            yield _chunked_frame(query_index, pending)
            pending, size = [], 0
        pending.append(encoded)
        size += len(encoded)
    if pending:
        yield _chunked_frame(query_index, pending)


def _chunked_frame(query_index: int, encoded_series: list[bytes]) -> bytes:
    index = varint(2 << 3) + varint(query_index) if query_index else b""
    return frame(b"".join(encoded_series) + index)
