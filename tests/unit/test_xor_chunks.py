"""The compiled XOR chunk encoder (transforms/core/wire/_wire_xor.c) against its Python oracle
(tests/reference/xor.py): the same bytes for random series, and the protobuf Chunk fields as upb writes them."""

from __future__ import annotations

import array
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.read_helpers import decode_xor_chunk
from tests.reference import xor as oracle
from transforms.core.protocol import STALE_NAN_BITS
from transforms.core.read import xor
from transforms.core.wire import _wire, xor_chunks
from transforms.core.wire.proto import remote_read_pb2

U64 = (1 << 64) - 1


def _bits(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", value))[0]


_SPECIAL_BITS = [STALE_NAN_BITS, 0x7FF8000000000000, 0x7FF8000000000ABC, 0xFFF0000000000001, 0x7FFFFFFFFFFFFFFF,
                 _bits(math.inf), _bits(-math.inf), 0, 1 << 63, 1, _bits(5e-324), _bits(1.7976931348623157e308)]

# a value: the previous one again (None), a special pattern, any 64 bits, a float, a small integer, or the
# previous one with some of its low bits flipped (a close value: 31+ leading zeros in the XOR, the 5-bit cap)
_value = st.one_of(st.none(), st.sampled_from(_SPECIAL_BITS), st.integers(0, U64),
                   st.floats(allow_nan=True, allow_infinity=True).map(_bits),
                   st.integers(-1000, 1000).map(lambda i: _bits(float(i))),
                   st.tuples(st.just("flip"), st.integers(1, (1 << 40) - 1)))
# a delta: Prometheus' regular scrape and its jitter, every delta-of-delta bucket's edges, and large jumps
_EDGES = [e + s for w in (14, 17, 20) for e in (1 << (w - 1), 1 - (1 << (w - 1))) for s in (-1, 0, 1)]
_delta = st.one_of(st.sampled_from([15_000, 15_000, 15_001, 14_999, 0, 1]), st.sampled_from(_EDGES),
                   st.integers(0, 1 << 20), st.integers(0, 1 << 40)).map(abs)  # sorted: each one >= 0


@st.composite
def series(draw) -> tuple[np.ndarray, np.ndarray]:
    count = draw(st.integers(1, 300))
    first = draw(st.integers(-(1 << 50), 1 << 50))
    deltas = draw(st.lists(_delta, min_size=count - 1, max_size=count - 1))
    stamps = [first]
    for delta in deltas:
        stamps.append(stamps[-1] + delta)
    bits: list[int] = []
    for choice in draw(st.lists(_value, min_size=count, max_size=count)):
        previous = bits[-1] if bits else 0
        bits.append(previous if choice is None else previous ^ choice[1] if isinstance(choice, tuple) else choice)
    return np.array(stamps, np.int64), np.array(bits, np.uint64).view(np.float64)


def _oracle_chunks(stamps: np.ndarray, values: np.ndarray) -> list[tuple[int, int, bytes]]:
    return list(oracle.encode_chunks(stamps, values))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(series())
def test_chunks_equal_the_python_oracle_byte_for_byte(drawn):
    stamps, values = drawn
    got = xor.encode_chunks(stamps, values)
    assert got == _oracle_chunks(stamps, values)
    assert len(got) == -(-len(stamps) // xor.SAMPLES_PER_CHUNK)
    points = [p for _, _, data in got for p in decode_xor_chunk(data)]
    assert points == list(zip(stamps.tolist(), values.view(np.uint64).tolist(), strict=True))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(series())
def test_chunk_fields_are_protobufs_own_serialization(drawn):
    stamps, values = drawn
    expected = remote_read_pb2.ChunkedSeries(chunks=[
        remote_read_pb2.Chunk(min_time_ms=lo, max_time_ms=hi, type=remote_read_pb2.Chunk.XOR, data=data)
        for lo, hi, data in _oracle_chunks(stamps, values)]).SerializeToString()
    assert xor.chunk_fields(stamps, values) == expected


@pytest.mark.parametrize("stamps", [[0], [0, 0], [-1, 5], [0, 1, 2], [-(1 << 62), 0, 1 << 62]])
def test_zero_and_negative_times_serialize_as_protobuf_does(stamps):
    stamps_array = np.array(stamps, np.int64)
    values = np.zeros(len(stamps), np.float64)
    expected = remote_read_pb2.ChunkedSeries(chunks=[
        remote_read_pb2.Chunk(min_time_ms=lo, max_time_ms=hi, type=remote_read_pb2.Chunk.XOR, data=data)
        for lo, hi, data in _oracle_chunks(stamps_array, values)]).SerializeToString()
    assert xor.chunk_fields(stamps_array, values) == expected


def test_one_long_chunk_equals_the_oracle():
    """encode_chunk takes any chunk size up to the 2-byte count (Prometheus' own chunks are compared with it)."""
    rng = np.random.default_rng(7)
    stamps = np.cumsum(rng.integers(1, 30_000, 5000)).tolist()
    bits = rng.integers(0, 1 << 63, 5000, dtype=np.uint64).tolist()
    assert xor.encode_chunk(stamps, bits) == oracle.encode_chunk(stamps, bits)
    with pytest.raises(ValueError, match="per_chunk must be 1..65535"):
        xor_chunks.chunks(np.zeros(3, np.int64), np.zeros(3), 1 << 16)


def test_an_empty_series_has_no_chunks():
    assert xor.encode_chunks(np.zeros(0, np.int64), np.zeros(0)) == []
    assert xor.chunk_fields(np.zeros(0, np.int64), np.zeros(0)) == b""


def test_columns_are_checked_before_they_are_read():
    stamps, values = np.arange(4, dtype=np.int64), np.zeros(4)
    with pytest.raises(ValueError, match="values has 3 items, timestamps 4"):
        _wire.xor_chunks(stamps, values[:3], 120, False)
    with pytest.raises(TypeError, match="column timestamps must hold int64"):
        _wire.xor_chunks(array.array("h", range(4)), values, 120, False)
    with pytest.raises(ValueError, match="column values is not C-contiguous"):
        _wire.xor_chunks(stamps, np.zeros(8)[::2], 120, False)
    with pytest.raises(ValueError, match="column timestamps is not aligned"):
        _wire.xor_chunks(memoryview(bytearray(33))[1:], values, 120, False)
    with pytest.raises(TypeError, match="column values must be a buffer"):
        _wire.xor_chunks(stamps, [0.0] * 4, 120, False)
