"""The archive-format seam: a format owns suffix, encoding, compression and reading back."""

from __future__ import annotations

import gzip

import pytest

from transforms.archive_format import DEFAULT_FORMAT, FORMATS, GZIP, archive_format, partition_parts
from transforms.metric_to_log import Partition


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
