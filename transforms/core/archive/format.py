"""Archive formats, in the spirit of Beam's `fileio.FileSink`: the conversion yields records per
partition, and a format owns everything about the files: their suffix, how records become bytes,
the compression, and how a reader gets the records back.

A record is one sample in the metric_to_log shape (transforms/core/archive/metric_to_log.py), as the JSON object
text the converter builds. The pipeline hands formats decoded batches (`convert`): ndjson packs the lines
made from them in compiled code (transforms.core.archive.lines.LineBlock), Parquet builds Arrow blocks
from the batch's columns (transforms.core.archive.parquet_columns) and reads the lines' records only for
the histograms and exemplars of the series that carry them.
Adding a format means one class here and one entry in FORMATS; the pipeline's `--archive_format`
picks it, and the tools and tests ask it for its glob.
"""

from __future__ import annotations

import abc
import gzip
import json
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from isal import igzip, isal_zlib

from transforms.core.archive import parquet
from transforms.core.archive.lines import BatchLines, LineBlock, PackedBlock
from transforms.core.archive.metric_to_log import ConversionError, Partition
from transforms.core.archive.parquet_columns import ParquetBlocks
from transforms.core.archive.records import (
    MetadataRecord,
    Sample,
    SampleColumns,
    metadata_records,
    ndjson_columns,
    record_samples,
)
from transforms.core.metadata import MetadataStore
from transforms.core.wire.batch import Batch

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

    def converter(self, store: MetadataStore, compress_blocks: bool = True) -> BatchLines:
        """The per-worker state `convert` needs (series tables, kinds, metadata), owned by the converting
        DoFn's setup. `compress_blocks=False` leaves blocks that some formats compress for the shuffle
        uncompressed, for a shuffle that stays in memory."""
        return BatchLines(store)

    def convert(self, converter: BatchLines, batch: Batch, tenant: str) -> dict[Partition, PackedBlock]:
        """A decoded request's packed blocks by partition, as they cross the group-by-partition. By default
        its compiled lines, packed; raises ConversionError for what cannot be archived."""
        return {partition: self.pack(block) for partition, block in converter.convert(batch, tenant).items()}

    def pack(self, block: LineBlock) -> PackedBlock:
        """A block of the pipeline's compiled lines (transforms.core.archive.lines) as it crosses the
        group-by-partition. By default the lines themselves; a format whose files are a concatenation
        of per-block pieces makes those pieces here, in the converting step, so the shuffle carries
        (and the runner copies) fewer bytes."""
        return PackedBlock(block.data, block.lines)

    def file_chunks(self, packed: Sequence[PackedBlock]) -> tuple[Iterable[bytes], str]:
        """A whole file from its packed blocks: the chunks as they go to storage, and the Beam
        compression to write them with. By default each block's records are encoded on their own
        and Beam compresses (`compression`)."""
        return [self.encode(LineBlock(*block).records()) for block in packed], self.compression

    @abc.abstractmethod
    def read(self, stored: bytes) -> list[dict[str, Any]]:
        """Every record of a whole file, as stored (compressed)."""

    @abc.abstractmethod
    def encode_metadata(self, records: Sequence[MetadataRecord]) -> bytes:
        """A whole companion metadata file (ARCHIVE/_metadata/...), as stored (compressed)."""

    @abc.abstractmethod
    def read_metadata(self, stored: bytes) -> list[MetadataRecord]:
        """Every record of a whole companion metadata file, as stored."""

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

    def pack(self, block: LineBlock) -> PackedBlock:
        # One complete gzip member per block, deflated by ISA-L at level 1: ~10x Beam's zlib level 6 on
        # these lines for ~20% larger files (docs/performance.md). A file is its members concatenated,
        # which gzip, zcat, Python's gzip and DuckDB read as one stream (RFC 1952, section 2.2); the
        # group-by-partition then carries ~1/8 of the bytes the lines would be.
        return PackedBlock(isal_zlib.compress(block.data, GZIP_LEVEL, GZIP_WBITS), block.lines)

    def file_chunks(self, packed: Sequence[PackedBlock]) -> tuple[Iterable[bytes], str]:
        return [block.data for block in packed], UNCOMPRESSED  # already gzip: Beam writes them as they are

    def read(self, stored: bytes) -> list[dict[str, Any]]:
        # split on "\n" only: JSON strings may hold U+2028 etc., which str.splitlines() would cut at
        return [json.loads(line) for line in gzip.decompress(stored).decode().split("\n") if line]

    def points(self, stored: bytes) -> SampleColumns:
        # float-sample lines parsed in compiled code, the others (histograms, exemplars) as read() reads them;
        # ISA-L inflates ~1.4x faster than zlib, but calls a file that is not gzip at all truncated: say so first
        if stored and not stored.startswith(b"\x1f\x8b"):
            raise gzip.BadGzipFile(f"not a gzip file (starts with {stored[:8]!r})")
        return ndjson_columns(igzip.decompress(stored))

    def encode_metadata(self, records: Sequence[MetadataRecord]) -> bytes:
        lines = [r.to_json() for r in sorted(records, key=lambda r: (r.name, r.ms))]
        return isal_zlib.compress(("\n".join(lines) + "\n").encode(), GZIP_LEVEL, GZIP_WBITS)

    def read_metadata(self, stored: bytes) -> list[MetadataRecord]:
        return metadata_records(self.read(stored))


class ParquetFormat(ArchiveFormat):
    """Parquet (transforms/core/archive/parquet.py): one row per sample, typed columns, zstd inside the file."""

    name = "parquet"
    suffix = ".parquet"
    compression = UNCOMPRESSED  # Parquet compresses its own pages

    def encode(self, records: Sequence[str]) -> bytes:
        return parquet.table_bytes(parquet.encode_table(records))

    def converter(self, store: MetadataStore, compress_blocks: bool = True) -> ParquetBlocks:
        return ParquetBlocks(store, compress_blocks=compress_blocks)

    def convert(self, converter: BatchLines, batch: Batch, tenant: str) -> dict[Partition, PackedBlock]:
        if not isinstance(converter, ParquetBlocks):
            return super().convert(converter, batch, tenant)
        try:
            # the slow series' histograms and exemplars: rows from the lines metric_to_log makes of those series,
            # packed after each partition's float rows (Arrow arrays from the batch's columns)
            side = {partition: (parquet.records_block(block.records(), converter.compress_blocks), block.lines)
                    for partition, block in converter.side_blocks(batch, tenant).items()}
            return converter.blocks(batch, tenant, side)
        except ConversionError:
            if batch.slow:  # the first sample out of range in the request's order, as the lines name it
                converter.convert(batch, tenant)
            raise

    def pack(self, block: LineBlock) -> PackedBlock:
        return PackedBlock(parquet.records_block(block.records()), block.lines)

    def file_chunks(self, packed: Sequence[PackedBlock]) -> tuple[Iterable[bytes], str]:
        # one table for the whole file: rows sorted by series then time across every block
        return [parquet.table_bytes(parquet.file_table(block.data for block in packed))], self.compression

    def read(self, stored: bytes) -> list[dict[str, Any]]:
        return parquet.table_records(parquet.read_table(stored))

    def encode_metadata(self, records: Sequence[MetadataRecord]) -> bytes:
        return parquet.encode_metadata(records)

    def read_metadata(self, stored: bytes) -> list[MetadataRecord]:
        return parquet.read_metadata(stored)

    def samples(self, stored: bytes) -> Iterable[Sample]:
        return parquet.table_samples(parquet.read_series_table(stored))

    def points(self, stored: bytes) -> SampleColumns:
        return parquet.table_columns(parquet.read_series_table(stored))


FORMATS: dict[str, ArchiveFormat] = {f.name: f for f in (NdjsonFormat(), ParquetFormat())}
DEFAULT_FORMAT = NdjsonFormat.name


def archive_format(name: str) -> ArchiveFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown archive format {name!r}: use one of {', '.join(sorted(FORMATS))}") from None
