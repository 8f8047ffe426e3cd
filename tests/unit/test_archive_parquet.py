"""The Parquet archive format: typed columns, exact special values, histograms and exemplars, sort order."""

from __future__ import annotations

import io
import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.archive_samples import ODD_NAN, T0, records_of, sample_request
from transforms.core.archive import metric_to_log
from transforms.core.archive.format import archive_format
from transforms.core.archive.lines import LineBlock
from transforms.core.archive.records import RecordError, decode_value
from transforms.core.protocol import PROMETHEUS_NAN, STALE_NAN, float_bits
from transforms.core.wire.builders import Series, build_v1


def test_parquet_reads_back_exactly_what_ndjson_reads_back() -> None:
    records = records_of(sample_request())
    ndjson, parquet = archive_format("ndjson"), archive_format("parquet")
    blocks = [LineBlock.of_records(records[:3]), LineBlock.of_records(records[3:])]
    stored, compression = ndjson.file_chunks([ndjson.pack(block) for block in blocks])
    assert compression == "uncompressed", "ndjson gzips itself (ISA-L)"
    from_ndjson = ndjson.read(b"".join(stored))
    stored, compression = parquet.file_chunks([parquet.pack(block) for block in blocks])
    assert compression == "uncompressed", "Parquet compresses its own pages"
    from_parquet = parquet.read(b"".join(stored))

    def canonical(rs):  # NaN != NaN: compare through the encoded text, which carries the bits
        return sorted(json.dumps(r, sort_keys=True, default=str).replace("NaN", "nan") for r in rs)
    assert len(from_parquet) == len(records) == 10
    assert canonical(from_parquet) == canonical(from_ndjson)


def test_columns_are_typed_sorted_and_special_values_marked() -> None:
    stored = archive_format("parquet").encode(records_of(sample_request()))
    table = pq.read_table(io.BytesIO(stored))
    assert str(table.schema.field("timestamp").type) == "timestamp[ms, tz=UTC]"
    assert pa.types.is_map(table.schema.field("labels").type)
    rows = table.to_pylist()
    keys = [(r["name"], sorted(r["labels"]), r["timestamp"]) for r in rows if r["type"] in ("counter", "gauge")]
    assert keys == sorted(keys)  # by series, then time
    specials = {r["special"]: r["value"] for r in rows if r["special"]}
    assert specials == {"StaleNaN": None, "NaN:0x7ff8000000000000": None, "NaN:0x7ff8000000000abc": None}
    plain = [r["value"] for r in rows if r["name"] == "up"]
    assert plain == [math.inf, 1.0]  # +Inf is an ordinary value, and rows are in time order
    assert {r["type"] for r in rows} == {"counter", "gauge", "native_histogram", "exemplar"}
    hist = next(r["histogram"] for r in rows if r["type"] == "native_histogram" and r["histogram"]["count_int"] == 5)
    assert float_bits(hist["sum"]) == float_bits(STALE_NAN)  # NaN bits survive inside the struct too
    assert hist["positive_deltas"] == [1, 1, -1] and hist["negative_spans"] == [{"offset": -2, "length": 1}]
    metadata = pq.ParquetFile(io.BytesIO(stored)).metadata
    column = metadata.row_group(0).column(0)
    assert column.compression == "ZSTD" and column.statistics.has_min_max
    assert "RLE_DICTIONARY" in column.encodings


def test_rows_group_by_the_chosen_row_group_size(monkeypatch) -> None:
    from transforms.core.archive import parquet
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 4)
    stored = archive_format("parquet").encode(records_of(sample_request()))
    assert pq.ParquetFile(io.BytesIO(stored)).metadata.num_row_groups == 3  # 10 rows in groups of 4


def test_each_row_group_dictionary_holds_only_its_own_series_strings(monkeypatch) -> None:
    """file_table hands the writer name and labels as dictionary arrays, one chunk per row group: a row group's
    dictionary pages hold the strings of its own rows, not the whole file's (which would double a file's size)."""
    from transforms.core.archive import parquet
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 4)
    request = build_v1([Series({"__name__": f"m{i}", "job": f"job{i}"}, [(T0 + i, float(i))]) for i in range(8)])
    fmt = archive_format("parquet")
    stored = b"".join(fmt.file_chunks(list(_blocks(fmt, request).values()))[0])
    reader = pq.ParquetFile(io.BytesIO(stored), read_dictionary=["name", "labels.key_value.value"])
    assert reader.metadata.num_row_groups == 2
    for group, expected in enumerate((["m0", "m1", "m2", "m3"], ["m4", "m5", "m6", "m7"])):
        table = reader.read_row_group(group, columns=["name", "labels"])
        name = table.column("name").chunk(0)
        assert sorted(name.dictionary.to_pylist()) == expected and name.dictionary_decode().to_pylist() == expected
        values = table.column("labels").chunk(0).items
        assert sorted(values.dictionary.to_pylist()) == [f"job{m[1:]}" for m in expected]
    assert parquet.read_table(stored).column("name").to_pylist() == [f"m{i}" for i in range(8)]


def _blocks(fmt, request) -> dict:
    from transforms.core.metadata import MetadataStore
    from transforms.core.protocol import Protocol
    from transforms.core.wire import codec, snappy_block
    converter = fmt.converter(MetadataStore())
    body = snappy_block.compress(request.SerializeToString())
    return fmt.convert(converter, codec.decode(body, Protocol.V1, 1 << 24, table=converter.table("t")).batch, "t")


def test_decode_value_is_encode_values_inverse_bit_for_bit() -> None:
    for value in (0.1, -0.0, 1e300, math.inf, -math.inf, STALE_NAN, ODD_NAN, float("nan"), PROMETHEUS_NAN):
        assert float_bits(decode_value(json.loads(metric_to_log.encode_value(value)))) == float_bits(value)
    assert metric_to_log.encode_value(PROMETHEUS_NAN) == '"NaN"'
    with pytest.raises(RecordError, match="unknown special value"):
        decode_value("NaN:0x12")


def test_a_file_that_is_not_parquet_is_a_record_error() -> None:
    with pytest.raises(RecordError, match="not a readable Parquet file"):
        archive_format("parquet").read(b"PAR1 but not really")


def test_series_that_join_alike_stay_apart_when_read_back() -> None:
    """Label sets whose plain joins collide ({'a\\0b': '1\\02'} vs {'a': '1', 'b': '2'}) are two series."""
    request = build_v1([Series({"__name__": "n", "a\x00b": "1\x002"}, [(T0, 1.0)]),
                        Series({"__name__": "n", "a": "1", "b": "2"}, [(T0, 2.0)]),
                        Series({"__name__": "n", "a": "1\\", "b": "2"}, [(T0, 3.0)])])
    fmt = archive_format("parquet")
    got = {s.payload: dict(s.labels) for s in fmt.samples(fmt.encode(records_of(request)))}
    assert got == {1.0: {"a\x00b": "1\x002"}, 2.0: {"a": "1", "b": "2"}, 3.0: {"a": "1\\", "b": "2"}}
