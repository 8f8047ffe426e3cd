"""Columns handed to the compiled module (format_lines, plan_requests, encode_v1, encode_v2) are checked before
the C code reads them as int32/int64 arrays: a wrong item type or width, a partial item, a misaligned slice
or a strided view is a TypeError or ValueError naming the column, and every right one (numpy arrays of
either sign, bytes, typed memoryviews) gives the same output as the decoder's own bytes columns."""

from __future__ import annotations

import array

import numpy as np
import pytest

from transforms.core.protocol import Protocol
from transforms.core.wire import _wire, batch
from transforms.core.wire.batch import Batch, SeriesTable
from transforms.core.wire.proto import remote_v1_pb2

SERIES, SAMPLES_PER_SERIES = 250, 4  # 1000 samples: a Prometheus request's size
KIND = b'"kind":"absolute","gauge":{"value":'


def _batch() -> Batch:
    request = remote_v1_pb2.WriteRequest()
    for s in range(SERIES):
        series = request.timeseries.add()
        series.labels.add(name="__name__", value="node_cpu_seconds_total")
        series.labels.add(name="cpu", value=str(s))
        for i in range(SAMPLES_PER_SERIES):
            series.samples.add(value=s + i / 10, timestamp=1_700_000_000_000 + 15_000 * i)
    payload = request.SerializeToString()
    return batch.decode(payload, Protocol.V1, SeriesTable(), SERIES * SAMPLES_PER_SERIES)


@pytest.fixture(scope="module")
def decoded() -> Batch:
    return _batch()


def _format_lines(b: Batch, **replace) -> list:
    columns = {"head_index": b.series_slot, "kind_index": b.series_slot, "sample_series": b.sample_series,
               "timestamps": b.timestamps, "values": b.values, "starts": None, "created": None, **replace}
    return _wire.format_lines(b.heads, [KIND] * len(b.heads), **columns)


def _encode_v1(b: Batch, **replace) -> bytes:
    keys = [bytes(f"\n\x0c\n\x03cpu\x12\x05{i:05d}", "ascii") for i in range(SERIES)]
    columns = {"series": b.sample_series, "timestamps": b.timestamps, "values": b.values, **replace}
    n = len(b.timestamps) // 8
    return _wire.encode_v1(keys, columns["series"], columns["timestamps"], columns["values"], 0, n,
                           starts=replace.get("starts"))


def _encode_v2(b: Batch, **replace) -> bytes:
    columns = {"series": b.sample_series, "timestamps": b.timestamps, "values": b.values,
               "starts": np.zeros(len(b.timestamps) // 8, np.int64), **replace}
    n = len(b.timestamps) // 8
    return _wire.encode_v2(b.labels, {}, columns["series"], columns["timestamps"], columns["values"],
                           columns["starts"], 0, n)


def _plan(b: Batch, **replace) -> list:
    keys = [b"\n\x0c\n\x03cpu\x12\x0500000"] * SERIES
    columns = {"series": b.sample_series, "timestamps": b.timestamps, "values": b.values, "starts": None, **replace}
    return _wire.plan_requests(keys, columns["series"], columns["timestamps"], columns["values"], columns["starts"],
                               100, 1 << 20)


def _misaligned(data: bytes) -> memoryview:
    """The same bytes one byte into a bytearray: every item straddles its natural alignment."""
    return memoryview(bytearray(b"\0" + data))[1:]


# (column, how to spoil it, exception, words in the message); `raw` is the column's bytes from the decoder
SPOILED = [
    ("timestamps", lambda raw: _misaligned(raw), ValueError, "not aligned"),
    ("timestamps", lambda raw: raw[:-3], ValueError, "whole number"),
    ("timestamps", lambda raw: array.array("h", raw), TypeError, "format 'h'"),
    ("timestamps", lambda raw: np.frombuffer(raw, np.int64).astype(np.float64), TypeError, "format 'd'"),
    ("timestamps", lambda raw: np.frombuffer(raw, np.int64).astype(">i8"), TypeError, "format '>q'"),
    ("timestamps", lambda raw: np.frombuffer(raw + raw, np.int64)[::2], ValueError, "not C-contiguous"),
    ("timestamps", lambda raw: list(np.frombuffer(raw, np.int64)), TypeError, "must be a buffer of int64"),
    ("values", lambda raw: _misaligned(raw), ValueError, "not aligned"),
    ("values", lambda raw: np.frombuffer(raw, np.float64).astype(np.float32), TypeError, "format 'f'"),
    ("values", lambda raw: raw + b"\0", ValueError, "whole number"),
    ("series", lambda raw: _misaligned(raw), ValueError, "not aligned"),
    ("series", lambda raw: array.array("h", raw), TypeError, "format 'h'"),
    ("series", lambda raw: np.frombuffer(raw, np.uint32).astype(np.int64), TypeError, "format 'l'"),
    ("series", lambda raw: raw[:-1], ValueError, "whole number"),
]


def _raw(b: Batch, column: str) -> bytes:
    return {"series": b.sample_series, "timestamps": b.timestamps, "values": b.values}[column]


@pytest.mark.parametrize(("column", "spoil", "error", "words"), SPOILED)
@pytest.mark.parametrize("call", [_encode_v1, _encode_v2, _plan])
def test_the_sink_encoder_refuses_a_spoiled_column_by_name(decoded: Batch, call, column, spoil, error, words):
    with pytest.raises(error, match=words) as raised:
        call(decoded, **{column: spoil(_raw(decoded, column))})
    assert f"column {column} " in str(raised.value)


@pytest.mark.parametrize(("column", "spoil", "error", "words"), SPOILED)
def test_archive_lines_refuse_a_spoiled_column_by_name(decoded: Batch, column, spoil, error, words):
    name = "sample_series" if column == "series" else column
    with pytest.raises(error, match=words) as raised:
        _format_lines(decoded, **{name: spoil(_raw(decoded, column))})
    assert f"column {name} " in str(raised.value)


def test_archive_lines_refuse_spoiled_per_series_columns(decoded: Batch):
    with pytest.raises(ValueError, match="column head_index is not aligned"):
        _format_lines(decoded, head_index=_misaligned(decoded.series_slot))
    with pytest.raises(TypeError, match="column kind_index must hold int32"):
        _format_lines(decoded, kind_index=np.frombuffer(decoded.series_slot, np.int32).astype(np.int16))
    with pytest.raises(ValueError, match="column created holds 1 items, expected 250"):
        _format_lines(decoded, created=np.zeros(1, np.int64), starts=np.zeros(len(decoded.timestamps) // 8, np.int64))
    with pytest.raises(ValueError, match="column starts holds"):
        _format_lines(decoded, starts=np.zeros(3, np.int64))


def test_every_well_typed_column_gives_the_same_output_as_the_decoders_bytes(decoded: Batch):
    lines = _format_lines(decoded)
    assert sum(count for _, _, count in lines) == SERIES * SAMPLES_PER_SERIES
    timestamps = np.frombuffer(decoded.timestamps, np.int64)
    for same in (timestamps.copy(), timestamps.astype(np.uint64), memoryview(decoded.timestamps).cast("q"),
                 array.array("q", decoded.timestamps), bytearray(decoded.timestamps)):
        assert _format_lines(decoded, timestamps=same) == lines
    values = np.frombuffer(decoded.values, np.float64)
    body = _encode_v1(decoded)
    for same in (values.copy(), values.view(np.uint64), values.view(np.int64), memoryview(decoded.values).cast("d")):
        assert _encode_v1(decoded, values=same) == body
    series = np.frombuffer(decoded.sample_series, np.uint32)
    for same in (series.copy(), series.astype(np.int32), memoryview(decoded.sample_series).cast("I")):
        assert _encode_v1(decoded, series=same) == body
        assert _encode_v2(decoded, series=same) == _encode_v2(decoded)
    empty = np.zeros(0, np.int64)
    assert _wire.encode_v1([], np.zeros(0, np.uint32), empty, memoryview(bytearray(1))[1:], 0, 0) == b""
