"""The archive-format seam: a format owns suffix, encoding, compression and reading back."""

from __future__ import annotations

import gzip

import pytest

from transforms.core.archive.format import DEFAULT_FORMAT, FORMATS, GZIP, archive_format, partition_parts
from transforms.core.archive.metric_to_log import Partition


def test_ndjson_encodes_one_line_per_record_and_reads_them_back() -> None:
    fmt = archive_format("ndjson")
    records = ['{"name":"a","tags":{"x":"\\u2028"}}', '{"name":"b"}']
    chunks = fmt.encode(records[:1]) + fmt.encode(records[1:])  # a file is its chunks, concatenated
    assert chunks == b'{"name":"a","tags":{"x":"\\u2028"}}\n{"name":"b"}\n'
    assert fmt.compression == GZIP
    assert [r["name"] for r in fmt.read(gzip.compress(chunks))] == ["a", "b"]


def test_names_and_globs_come_from_the_format() -> None:
    fmt = FORMATS[DEFAULT_FORMAT]
    name = fmt.file_name("20261125T090000Z-60s-pane0", 3)
    assert name == "part-20261125T090000Z-60s-pane0-0003.ndjson.gz"
    assert fmt.glob() == "*.ndjson.gz"
    assert partition_parts(Partition("t", "2026-11-25", "09")) == ("tenant=t", "date=2026-11-25", "hour=09")


def test_an_unknown_format_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown archive format 'orc': use one of ndjson, parquet"):
        archive_format("orc")


def test_an_ndjson_file_of_packed_blocks_is_one_standard_gzip_stream(tmp_path) -> None:
    """Each block crosses the shuffle as its own gzip member; the file is the members concatenated,
    which every reader the README names must read as one stream."""
    import subprocess

    import duckdb

    from transforms.core.archive.lines import LineBlock

    fmt = archive_format("ndjson")
    blocks = [LineBlock.of_records([f'{{"name":"m","v":{i * 1000 + j}}}' for j in range(1000)]) for i in range(3)]
    packed = [fmt.pack(block) for block in blocks]
    assert [p.lines for p in packed] == [1000] * 3
    assert all(p.data[:2] == b"\x1f\x8b" and len(p.data) < len(b.data) for p, b in zip(packed, blocks, strict=True))
    chunks, compression = fmt.file_chunks(packed)
    assert compression == "uncompressed"  # already gzip
    path = tmp_path / fmt.file_name("t", 0)
    path.write_bytes(b"".join(chunks))
    expected = b"".join(block.data for block in blocks)
    assert gzip.decompress(path.read_bytes()) == expected
    assert subprocess.run(["zcat", str(path)], capture_output=True, check=True).stdout == expected
    assert [r["v"] for r in fmt.read(path.read_bytes())] == list(range(3000))
    query = f"SELECT count(*), sum(v) FROM read_ndjson_auto('{path}')"
    assert duckdb.sql(query).fetchall() == [(3000, sum(range(3000)))]
