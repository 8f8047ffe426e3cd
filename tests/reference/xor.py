"""Prometheus' XOR chunk encoding (tsdb/chunkenc/xor.go) in plain Python: the oracle of the compiled encoder
(transforms/core/wire/_wire_xor.c), which must write these bytes exactly (tests/unit/test_xor_chunks.py).

A chunk is a 2-byte big-endian sample count, then a bit stream: the first timestamp as a signed varint and
its value's 64 bits; the second timestamp as an unsigned varint delta; then delta-of-delta timestamps in
1/16/20/24/68-bit buckets, and each value XORed with the one before (Gorilla), reusing the previous
leading/trailing zero window when the new bits fit in it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

SAMPLES_PER_CHUNK = 120  # as Prometheus' head cuts chunks


class _Bits:
    """A big-endian bit stream built in one Python int (a chunk is at most a few kB).

    Its length follows Prometheus' bstream byte for byte. bstream writes a field of 8 bits or more byte by
    byte, and each byte write leaves a fresh empty byte after it, while single bits open a byte only when
    they need one. So the stream is ceil(bits / 8) bytes, plus one zero byte when it ends on a byte
    boundary after a field whose width is a multiple of 8. Readers ignore that byte, but equal bytes make
    the encoder checkable against Prometheus' own chunks.
    """

    def __init__(self) -> None:
        self.value = 0
        self.count = 0
        self.last_width = 0

    def write(self, bits: int, width: int) -> None:
        self.value = (self.value << width) | (bits & ((1 << width) - 1))
        self.count += width
        self.last_width = width

    def add_bytes(self, data: bytes) -> None:
        self.value = (self.value << (8 * len(data))) | int.from_bytes(data, "big")
        self.count += 8 * len(data)
        self.last_width = 8

    def to_bytes(self) -> bytes:
        length = -(-self.count // 8)
        if self.count % 8 == 0 and self.last_width % 8 == 0:
            length += 1
        return (self.value << (length * 8 - self.count)).to_bytes(length, "big")


def _uvarint(number: int) -> bytes:
    out = bytearray()
    while number >= 0x80:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _varint(number: int) -> bytes:
    return _uvarint((number << 1) ^ (number >> 63) if number < 0 else number << 1)


def _fits(number: int, width: int) -> bool:
    """Go's bitRange: -(2^(width-1) - 1) <= number <= 2^(width-1)."""
    return -((1 << (width - 1)) - 1) <= number <= 1 << (width - 1)


def encode_chunk(timestamps: list[int], value_bits: list[int]) -> bytes:
    bits = _Bits()
    leading, trailing = 0xFF, 0
    previous_delta = 0
    for i, (stamp, current) in enumerate(zip(timestamps, value_bits, strict=True)):
        if i == 0:
            bits.add_bytes(_varint(stamp))
            bits.write(current, 64)
            continue
        if i == 1:
            previous_delta = stamp - timestamps[0]
            bits.add_bytes(_uvarint(previous_delta))
        else:
            delta = stamp - timestamps[i - 1]
            dod = delta - previous_delta
            previous_delta = delta
            if dod == 0:
                bits.write(0, 1)
            elif _fits(dod, 14):
                bits.write(0b10, 2)
                bits.write(dod, 14)
            elif _fits(dod, 17):
                bits.write(0b110, 3)
                bits.write(dod, 17)
            elif _fits(dod, 20):
                bits.write(0b1110, 4)
                bits.write(dod, 20)
            else:
                bits.write(0b1111, 4)
                bits.write(dod, 64)
        xor = current ^ value_bits[i - 1]
        if xor == 0:
            bits.write(0, 1)
            continue
        bits.write(1, 1)
        new_leading = 64 - xor.bit_length()
        new_trailing = (xor & -xor).bit_length() - 1
        new_leading = min(new_leading, 31)  # the field is 5 bits wide
        if leading != 0xFF and new_leading >= leading and new_trailing >= trailing:
            bits.write(0, 1)
            bits.write(xor >> trailing, 64 - leading - trailing)
            continue
        leading, trailing = new_leading, new_trailing
        bits.write(1, 1)
        bits.write(leading, 5)
        significant = 64 - leading - trailing
        bits.write(significant, 6)  # 64 wraps to 0, as Prometheus writes it
        bits.write(xor >> trailing, significant)
    return len(timestamps).to_bytes(2, "big") + bits.to_bytes()


def encode_chunks(timestamps: np.ndarray, values: np.ndarray) -> Iterator[tuple[int, int, bytes]]:
    """(min time, max time, XOR chunk bytes) for a series' samples, SAMPLES_PER_CHUNK per chunk."""
    stamps = timestamps.astype(np.int64).tolist()
    bits = values.astype(np.float64).view(np.uint64).tolist()
    for first in range(0, len(stamps), SAMPLES_PER_CHUNK):
        part = stamps[first:first + SAMPLES_PER_CHUNK]
        yield part[0], part[-1], encode_chunk(part, bits[first:first + SAMPLES_PER_CHUNK])
