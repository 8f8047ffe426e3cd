"""Typed front of the compiled XOR chunk encoder (transforms/core/wire/_wire_xor.c).

Prometheus' XOR chunks (tsdb/chunkenc/xor.go) byte for byte, as its head writes them: the reader's
STREAMED_XOR_CHUNKS answers. Value bits pass through untouched (stale markers and NaN payloads come back bit
for bit); timestamp arithmetic wraps in 64 bits as Go's does.
"""

from __future__ import annotations

import numpy as np

from transforms.core.wire import _wire


def _columns(timestamps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Native int64 and float64 C-contiguous columns (the compiled side checks type, length and alignment)."""
    return (np.ascontiguousarray(timestamps, np.int64), np.ascontiguousarray(values, np.float64))


def chunks(timestamps: np.ndarray, values: np.ndarray, per_chunk: int) -> list[tuple[int, int, bytes]]:
    """(min time, max time, chunk bytes) for a series' samples, per_chunk samples per chunk (the last may hold
    fewer)."""
    stamps, floats = _columns(timestamps, values)
    return _wire.xor_chunks(stamps, floats, per_chunk, False)


def chunk_fields(timestamps: np.ndarray, values: np.ndarray, per_chunk: int) -> bytes:
    """The same chunks as the `repeated Chunk chunks = 2` fields of a prometheus.ChunkedSeries, as protobuf
    serializes them: a series' message is its label fields followed by these."""
    stamps, floats = _columns(timestamps, values)
    return _wire.xor_chunks(stamps, floats, per_chunk, True)
