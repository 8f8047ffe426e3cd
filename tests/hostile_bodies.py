"""Hostile remote-write payloads: megabytes of tiny repeated protobuf fields, built in milliseconds.

Each shape is what a sender could use to make upb and validation expand a small snappy body
into gigabytes (issue 10). Built directly as wire bytes (a repeated pattern), never via protobuf.
"""

from __future__ import annotations

from transforms.core.protocol import Protocol
from transforms.core.wire import snappy_block


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


_NAME_LABEL = _field(1, _field(1, b"__name__") + _field(2, b"a"))  # Label{__name__="a"} as a series' labels


def v1_empty_series(size: int) -> bytes:
    return _field(1, b"") * (size // 2)


def v1_tiny_valid_series(size: int) -> bytes:
    series = _field(1, _NAME_LABEL + _field(2, b""))
    return series * (size // len(series))


def v1_one_series_of_empty_samples(size: int) -> bytes:
    samples = _field(2, b"") * ((size - len(_NAME_LABEL) - 8) // 2)
    return _field(1, _NAME_LABEL + samples)


def v2_empty_series(size: int) -> bytes:
    return _field(5, b"") * (size // 2)


def v2_empty_symbols(size: int) -> bytes:
    return _field(4, b"") * (size // 2)


SHAPES = {
    "1.0 empty series": (Protocol.V1, v1_empty_series),
    "1.0 tiny valid series": (Protocol.V1, v1_tiny_valid_series),
    "1.0 one series of empty samples": (Protocol.V1, v1_one_series_of_empty_samples),
    "2.0 empty series": (Protocol.V2, v2_empty_series),
    "2.0 empty symbols": (Protocol.V2, v2_empty_symbols),
}


def body(shape: str, size: int) -> tuple[Protocol, bytes]:
    """The shape as a snappy body whose payload is about size bytes."""
    protocol, build = SHAPES[shape]
    return protocol, snappy_block.compress(build(size))
