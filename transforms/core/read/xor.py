"""Prometheus' XOR chunks (tsdb/chunkenc/xor.go) for STREAMED_XOR_CHUNKS responses, 120 samples a chunk.

The encoder is compiled (transforms/core/wire/xor_chunks.py); tests/reference/xor.py is its Python oracle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from transforms.core.wire import xor_chunks

SAMPLES_PER_CHUNK = 120  # as Prometheus' head cuts chunks


def encode_chunk(timestamps: Sequence[int], value_bits: Sequence[int]) -> bytes:
    """One chunk of up to 65535 samples: timestamps in ms, values as their 64 bits (unsigned)."""
    if not timestamps:
        raise ValueError("a chunk holds at least one sample")
    stamps = np.asarray(timestamps, np.int64)
    bits = np.asarray(value_bits, np.uint64)
    return xor_chunks.chunks(stamps, bits.view(np.float64), len(stamps))[0][2]


def encode_chunks(timestamps: np.ndarray, values: np.ndarray) -> list[tuple[int, int, bytes]]:
    """(min time, max time, XOR chunk bytes) for a series' samples, SAMPLES_PER_CHUNK per chunk."""
    return xor_chunks.chunks(timestamps, values, SAMPLES_PER_CHUNK)


def chunk_fields(timestamps: np.ndarray, values: np.ndarray) -> bytes:
    """encode_chunks' chunks as the `repeated Chunk chunks = 2` fields of a ChunkedSeries."""
    return xor_chunks.chunk_fields(timestamps, values, SAMPLES_PER_CHUNK)
