"""Snappy block format (the only framing remote-write allows), with a bomb-proof size check.

The block format starts with the uncompressed length as a little-endian base-128 varint.
We read that header first, so a request that claims gigabytes is refused before any
memory is allocated for it.
"""

from __future__ import annotations

import snappy

from transforms.core.errors import InvalidPayload, PayloadTooLarge

# A snappy copy op emits at most 64 bytes from a 3-byte tag (about 21x), so a header claiming
# more than 32x the compressed size is a lie (the slack covers tiny inputs).
_MAX_EXPANSION = 32
_MAX_VARINT_BYTES = 5  # the header is a uint32


def uncompressed_length(block: bytes) -> int:
    """Decode the uncompressed-length header of a snappy block."""
    result = 0
    for i in range(min(len(block), _MAX_VARINT_BYTES)):
        byte = block[i]
        result |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return result
    raise InvalidPayload("snappy: corrupt or truncated length header (is the body snappy block format?)")


def decompress(block: bytes, max_uncompressed: int) -> bytes:
    """Decompress a snappy block, refusing (413) one that would exceed max_uncompressed bytes."""
    if not block:
        return b""
    declared = uncompressed_length(block)
    if declared > max_uncompressed:
        raise PayloadTooLarge(
            f"decompressed size {declared} bytes exceeds the limit of {max_uncompressed} bytes"
        )
    if declared > _MAX_EXPANSION * len(block) + 64:
        raise InvalidPayload(
            f"snappy: header claims {declared} bytes from {len(block)} compressed bytes, which is impossible"
        )
    try:
        out = snappy.decompress(block)
    except snappy.UncompressError as exc:
        raise InvalidPayload(f"snappy: cannot decompress body: {exc}") from exc
    if len(out) != declared:
        raise InvalidPayload("snappy: decompressed length does not match the header")
    return out


def compress(data: bytes) -> bytes:
    """Compress to the snappy block format (never the framed format)."""
    return snappy.compress(data)
