"""Helpers for the remote-read tests: an archive written with the project's own format code, and an
independent decoder of Prometheus' XOR chunks and streamed frames (the oracle for the encoder)."""

from __future__ import annotations

import struct
from pathlib import Path

import google_crc32c

from transforms.core.archive import metric_to_log, parquet
from transforms.core.metadata import MetadataStore
from transforms.core.wire.proto import remote_read_pb2, remote_v1_pb2


def write_archive(root: Path, request: remote_v1_pb2.WriteRequest, tenant: str = "default",
                  counter_names: dict[str, str] | None = None, file_stem: str = "part-0") -> list[Path]:
    """Archive a write request as the pipeline does (metric_to_log lines -> Parquet), one file per hour."""
    store = MetadataStore()
    store.update(tenant, counter_names or {})
    written = []
    for partition, lines in metric_to_log.convert_v1(request, tenant, store).items():
        folder = root / f"tenant={partition.tenant}" / f"date={partition.date}" / f"hour={partition.hour}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{file_stem}.parquet"
        path.write_bytes(parquet.table_bytes(parquet.encode_table(lines)))
        written.append(path)
    return written


class _BitReader:
    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.left = len(data) * 8

    def read(self, width: int) -> int:
        self.left -= width
        if self.left < 0:
            raise ValueError("chunk ends early")
        return (self.value >> self.left) & ((1 << width) - 1)

    def uvarint(self) -> int:
        result = shift = 0
        while True:
            byte = self.read(8)
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result


def _signed(bits: int, width: int) -> int:
    """As xorIterator: 14/17/20-bit fields hold -(2^(w-1) - 1) .. 2^(w-1); 64 bits are an int64."""
    if width == 64:
        return bits - (1 << 64) if bits >= 1 << 63 else bits
    return bits - (1 << width) if bits > 1 << (width - 1) else bits


def decode_xor_chunk(data: bytes) -> list[tuple[int, int]]:
    """(timestamp, value bits) of an XOR chunk, read as Prometheus' xorIterator does."""
    count = int.from_bytes(data[:2], "big")
    bits = _BitReader(data[2:])
    out: list[tuple[int, int]] = []
    leading = trailing = 0
    delta = 0
    for i in range(count):
        if i == 0:
            zigzag = bits.uvarint()
            stamp = (zigzag >> 1) ^ -(zigzag & 1)
            out.append((stamp, bits.read(64)))
            continue
        if i == 1:
            delta = bits.uvarint()
        else:
            prefix = 0
            for _ in range(4):
                prefix = prefix << 1 | bits.read(1)
                if not prefix & 1:
                    break
            widths = {0b0: 0, 0b10: 14, 0b110: 17, 0b1110: 20, 0b1111: 64}
            width = widths[prefix]
            delta += _signed(bits.read(width), width) if width else 0
        stamp = out[-1][0] + delta
        value = out[-1][1]
        if bits.read(1):
            if bits.read(1):
                leading = bits.read(5)
                significant = bits.read(6) or 64
                trailing = 64 - leading - significant
            value ^= bits.read(64 - leading - trailing) << trailing
        out.append((stamp, value))
    return out


def read_frames(body: bytes) -> list[remote_read_pb2.ChunkedReadResponse]:
    """Split a streamed response into its messages, checking each frame's CRC32-Castagnoli."""
    out = []
    position = 0
    while position < len(body):
        length = shift = 0
        while True:
            byte = body[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        checksum = struct.unpack(">I", body[position:position + 4])[0]
        message = body[position + 4:position + 4 + length]
        assert len(message) == length, "frame cut short"
        assert google_crc32c.value(message) == checksum, "frame CRC32C mismatch"
        out.append(remote_read_pb2.ChunkedReadResponse.FromString(message))
        position += 4 + length
    return out


def block_chunks(block_dir: Path) -> list[tuple[int, bytes]]:
    """(encoding, data) of every chunk in a TSDB block's chunks/ segment files, CRC32C-checked.

    Segment file: 4-byte magic, 1-byte version, 3 bytes padding; then chunks of uvarint length, 1-byte
    encoding, data, CRC32-Castagnoli of encoding and data (tsdb/docs/format/chunks.md)."""
    out = []
    for segment in sorted((block_dir / "chunks").iterdir()):
        body = segment.read_bytes()
        position = 8
        while position < len(body):
            length = shift = 0
            while True:
                byte = body[position]
                position += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            encoding, data = body[position], body[position + 1:position + 1 + length]
            checksum = struct.unpack(">I", body[position + 1 + length:position + 5 + length])[0]
            assert google_crc32c.value(body[position:position + 1 + length]) == checksum, "chunk CRC mismatch"
            out.append((encoding, data))
            position += 5 + length
    return out
