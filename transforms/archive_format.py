"""Archive formats, in the spirit of Beam's `fileio.FileSink`: the conversion yields records per
partition, and a format owns everything about the files: their suffix, how records become bytes,
the compression, and how a reader gets the records back.

A record is one sample in the metric_to_log shape (transforms/metric_to_log.py), as the JSON object
text the converter builds. The pipeline hands formats blocks of ndjson lines made in compiled code
(transforms.archive_lines.LineBlock): ndjson writes them as they are, other formats read the records.
Adding a format means one class here and one entry in FORMATS; the pipeline's `--archive_format`
picks it, and the tools and tests ask it for its glob.
"""

from __future__ import annotations

import abc
import gzip
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

from isal import isal_zlib

from transforms import archive_parquet
from transforms.archive_lines import LineBlock
from transforms.archive_records import Sample, SampleColumns, record_samples
from transforms.metric_to_log import Partition

GZIP = "gzip"  # the values of Beam's CompressionTypes, so the I/O edge can hand them on unchanged
UNCOMPRESSED = "uncompressed"
GZIP_LEVEL = 1  # isal's fastest; files stay standard .gz
GZIP_WBITS = 31  # a gzip header and trailer
# Hive-style partition folders: tenant=T/date=YYYY-MM-DD/hour=HH
PARTITION_GLOB = ("tenant=*", "date=*", "hour=*")


def partition_parts(partition: Partition) -> tuple[str, str, str]:
    return f"tenant={partition.tenant}", f"date={partition.date}", f"hour={partition.hour}"


class ArchiveFormat(abc.ABC):
    name: ClassVar[str]
    suffix: ClassVar[str]
    compression: ClassVar[str]

    @abc.abstractmethod
    def encode(self, records: Sequence[str]) -> bytes:
        """One chunk of a file (before compression); a file is the concatenation of its chunks."""

    def encode_block(self, block: LineBlock) -> bytes:
        """One chunk from a block of the pipeline's compiled lines (transforms.archive_lines)."""
        return self.encode(block.records())

    def encode_file(self, blocks: Sequence[LineBlock]) -> list[bytes]:
        """A whole file's chunks of bytes from its blocks of lines. Streamable formats encode each
        block on its own; a format with a footer (Parquet) encodes the file at once."""
        return [self.encode_block(block) for block in blocks]

    def for_writing(self, chunks: Sequence[bytes]) -> tuple[Iterable[bytes], str]:
        """A file's chunks as they go to storage, and the Beam compression to write them with.
        By default Beam compresses (`compression`); a format may compress itself and write them as they are."""
        return chunks, self.compression

    @abc.abstractmethod
    def read(self, stored: bytes) -> list[dict[str, Any]]:
        """Every record of a whole file, as stored (compressed)."""

    def samples(self, stored: bytes) -> Iterable[Sample]:
        """Every point of a whole file, decoded."""
        return record_samples(self.read(stored))

    def points(self, stored: bytes) -> Iterable[Sample] | SampleColumns:
        """The restore job's input: samples, or columns where the format has them."""
        return self.samples(stored)

    def file_name(self, label: str, shard: int) -> str:
        return f"part-{label}-{shard:04d}{self.suffix}"

    def glob(self) -> str:
        """The file-name pattern of this format's files within a partition."""
        return f"*{self.suffix}"


class NdjsonFormat(ArchiveFormat):
    """Newline-delimited JSON, gzip-compressed: one line per record."""

    name = "ndjson"
    suffix = ".ndjson.gz"
    compression = GZIP

    def encode(self, records: Sequence[str]) -> bytes:
        return ("\n".join(records) + "\n").encode()

    def encode_block(self, block: LineBlock) -> bytes:
        return block.data  # already this format's bytes: ndjson lines, made in compiled code

    def for_writing(self, chunks: Sequence[bytes]) -> tuple[Iterable[bytes], str]:
        # One standard gzip stream, deflated by ISA-L at level 1: ~10x Beam's zlib level 6 on these lines
        # for ~20% larger files (README, "Benchmarks"); Beam then writes the bytes as they are.
        return _gzip_stream(chunks), UNCOMPRESSED

    def read(self, stored: bytes) -> list[dict[str, Any]]:
        # split on "\n" only: JSON strings may hold U+2028 etc., which str.splitlines() would cut at
        return [json.loads(line) for line in gzip.decompress(stored).decode().split("\n") if line]


def _gzip_stream(chunks: Sequence[bytes]) -> Iterator[bytes]:
    deflate = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, GZIP_WBITS)
    for chunk in chunks:
        yield deflate.compress(chunk)
    yield deflate.flush()


class ParquetFormat(ArchiveFormat):
    """Parquet (transforms/archive_parquet.py): one row per sample, typed columns, zstd inside the file."""

    name = "parquet"
    suffix = ".parquet"
    compression = UNCOMPRESSED  # Parquet compresses its own pages

    def encode(self, records: Sequence[str]) -> bytes:
        return archive_parquet.write_bytes(archive_parquet.encode_table(records))

    def encode_file(self, blocks: Sequence[LineBlock]) -> list[bytes]:
        # one table for the whole file: rows sorted by series then time across every block
        return [self.encode([record for block in blocks for record in block.records()])]

    def read(self, stored: bytes) -> list[dict[str, Any]]:
        return archive_parquet.table_records(archive_parquet.read_table(stored))

    def samples(self, stored: bytes) -> Iterable[Sample]:
        return archive_parquet.table_samples(archive_parquet.read_table(stored))

    def points(self, stored: bytes) -> SampleColumns:
        return archive_parquet.table_columns(archive_parquet.read_table(stored))


FORMATS: dict[str, ArchiveFormat] = {f.name: f for f in (NdjsonFormat(), ParquetFormat())}
DEFAULT_FORMAT = NdjsonFormat.name


def archive_format(name: str) -> ArchiveFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown archive format {name!r}: use one of {', '.join(sorted(FORMATS))}") from None
