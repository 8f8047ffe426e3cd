"""The Parquet archive format: one row per sample, typed columns, sorted by series then time.

Columns (see docs/pipeline.md, "Parquet archive", for why each is what it is):

    name             string, dictionary-encoded
    labels           map<string, string> (every label but __name__), keys and values dictionary-encoded
    timestamp        timestamp[ms, UTC]
    value            double; NULL when `special` is set, so SQL aggregates never see a stale marker
    special          string, NULL for ordinary values (finite and +-Inf); 'StaleNaN', 'NaN'
                     (Prometheus' NaN) or 'NaN:0x<16 hex digits>': the exact bits of a NaN value
    type             string: 'counter' | 'gauge' (float samples, as the NDJSON 'kind' key),
                     'native_histogram' or 'exemplar'
    start_timestamp  timestamp[ms, UTC], NULL unless the sender gave one (2.0)
    histogram        struct (NULL unless type = 'native_histogram'): the wire encoding, field for field
    exemplar         struct<value double, labels map<string, string>> (NULL unless type = 'exemplar')

Reading gives back records in the NDJSON shape (transforms/core/archive/metric_to_log.py), so everything
downstream (tools, tests, the restore job) reads both formats alike.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms.core.archive.metric_to_log import encode_value
from transforms.core.archive.records import (
    EXEMPLAR,
    HISTOGRAM,
    SAMPLE_KINDS,
    MetadataRecord,
    RecordError,
    Sample,
    SampleColumns,
    Timestamps,
    decode_value,
    histogram_fields,
    record_kind,
)
from transforms.core.protocol import format_ms

ROW_GROUP_ROWS = 131_072  # window files: measured in docs/parquet-columns.md (compacted hours use 32,768 for queries)
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3

LABELS = pa.map_(pa.string(), pa.string())
_TIME = pa.timestamp("ms", tz="UTC")
_SPANS = pa.list_(pa.struct([("offset", pa.int32()), ("length", pa.uint32())]))
HISTOGRAM_TYPE = pa.struct([
    ("count_int", pa.uint64()), ("count_float", pa.float64()), ("sum", pa.float64()), ("schema", pa.int32()),
    ("zero_threshold", pa.float64()), ("zero_count_int", pa.uint64()), ("zero_count_float", pa.float64()),
    ("negative_spans", _SPANS), ("negative_deltas", pa.list_(pa.int64())), ("negative_counts", pa.list_(pa.float64())),
    ("positive_spans", _SPANS), ("positive_deltas", pa.list_(pa.int64())), ("positive_counts", pa.list_(pa.float64())),
    ("custom_values", pa.list_(pa.float64())), ("reset_hint", pa.string()),
])
EXEMPLAR_TYPE = pa.struct([("value", pa.float64()), ("labels", LABELS)])
SCHEMA = pa.schema([
    ("name", pa.string()), ("labels", LABELS), ("timestamp", _TIME), ("value", pa.float64()),
    ("special", pa.string()), ("type", pa.string()), ("start_timestamp", _TIME),
    ("histogram", HISTOGRAM_TYPE), ("exemplar", EXEMPLAR_TYPE),
])
# What file_table builds: SCHEMA, with name and the label strings as dictionary arrays (written alike)
_DICTIONARY_SCHEMA = SCHEMA.set(0, pa.field("name", pa.dictionary(pa.int32(), pa.string()))).set(
    1, pa.field("labels", pa.map_(pa.dictionary(pa.int32(), pa.string()), pa.dictionary(pa.int32(), pa.string()))))
# Companion metadata files (ARCHIVE/_metadata/...): one row per metric family seen in that hour
METADATA_SCHEMA = pa.schema([("name", pa.string()), ("timestamp", _TIME), ("type", pa.string()),
                             ("help", pa.string()), ("unit", pa.string())])
# Statistics where readers prune by them (the reader and DuckDB by name and time, compaction by type too):
# the label map's and values' statistics cost a quarter of the writer's time and prune nothing.
STATISTICS_COLUMNS = ["name", "timestamp", "type"]
DICTIONARY_COLUMNS = ["name", "labels.key_value.key", "labels.key_value.value", "special", "type",
                       "exemplar.labels.key_value.key", "exemplar.labels.key_value.value"]


def split_value(value: Any) -> tuple[float | None, str | None]:
    """(value column, special column) of an encoded sample value."""
    if isinstance(value, str) and value not in ("+Inf", "-Inf"):
        decode_value(value)  # rejects what is not a known special value
        return None, value
    return decode_value(value), None


def histogram_row(encoded: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key in ("count", "zero_count"):
        value = encoded[key]
        is_int = isinstance(value, int) and not isinstance(value, bool)
        row[f"{key}_int"] = value if is_int else None
        row[f"{key}_float"] = None if is_int else decode_value(value)
    row["sum"] = decode_value(encoded["sum"])
    row["schema"] = int(encoded["schema"])
    row["zero_threshold"] = decode_value(encoded["zero_threshold"])
    for side in ("negative", "positive"):
        row[f"{side}_spans"] = [{"offset": o, "length": n} for o, n in encoded.get(f"{side}_spans", ())]
        row[f"{side}_deltas"] = list(encoded.get(f"{side}_deltas", ()))
        row[f"{side}_counts"] = [decode_value(c) for c in encoded.get(f"{side}_counts", ())]
    row["custom_values"] = [decode_value(c) for c in encoded.get("custom_values", ())]
    row["reset_hint"] = encoded.get("reset_hint", "unknown")
    return row


# A block: one partition's rows from one request, as they cross the group-by-partition. Two Arrow IPC
# streams: the block's distinct series, each as its key (series_key: name and labels, decodable), and
# its rows, each naming its series by position; a file's blocks are merged and sorted by file_table.
# A packed block is one or more of them one after the other, each behind its header (a request's float
# rows, then the rows of its histograms and exemplars).
_BLOCK_SERIES = pa.schema([("key", pa.binary())])
_BLOCK_ROWS = pa.schema([("series", pa.int32()), ("timestamp", pa.int64()), ("value", pa.float64()),
                         ("special", pa.string()), ("type", pa.string()), ("start_timestamp", pa.int64()),
                         ("histogram", HISTOGRAM_TYPE), ("exemplar", EXEMPLAR_TYPE)])
_FLOAT_ROWS = pa.schema(list(_BLOCK_ROWS)[:6])
_FLOAT_ROW_NAMES = _FLOAT_ROWS.names
# Per message (series, rows): its size and the bytes stored for it; whether the rows hold histograms/exemplars.
# Each message is compressed on its own, straight from its Arrow buffer: joining them first, or copying them
# into Python bytes, cost as much as compressing them (~1,000-series blocks of ~230 KB, fresh each request).
_HEADER = struct.Struct("<QQQQ?")
_BLOCK_CODEC = "lz4"
# The series message (~190 bytes per node-like series, most of a block) is compressed with LZ4's acceleration
# (a negative level: fewer match searches): ~30 % less time than the default level for ~10 % more bytes.
# Decompression is the same LZ4 frame format and speed.
_SERIES_CODEC = pa.Codec(_BLOCK_CODEC, compression_level=-16)
_RAW_BLOCK = 1 << 63  # set in the size of the series message: both messages follow uncompressed
# Each string of a series key ends with the terminator and has its NUL characters escaped, so comparing
# the UTF-8 keys byte by byte orders series as Python orders (name, ((label, value), ...)) tuples: the
# terminator (0x00 0x01) sorts below any byte that can follow a string's end, an escaped NUL (0x00, then
# U+00FF's 0xc3 0xbf) above the terminator and below any other character.
_TERMINATOR = "\x00\x01"
_ESCAPED_NUL = "\x00\xff"


def series_key(name: str, pairs: Iterable[tuple[str, str]]) -> bytes:
    """The sort key of a series: its name and its (sorted) labels, order-preserving (see _TERMINATOR)."""
    parts = [name, *(text for pair in pairs for text in pair)]
    key = _TERMINATOR.join(parts) + _TERMINATOR
    if key.count("\x00") != len(parts):  # a NUL inside a name or label (rare): escape each string
        key = "".join(part.replace("\x00", _ESCAPED_NUL) + _TERMINATOR for part in parts)
    return key.encode()


def pack_block(series: pa.RecordBatch, rows: pa.RecordBatch, compress: bool = True) -> bytes:
    """The two batches as IPC messages without their schemas (the header says which rows schema).
    Compressed (LZ4), the shuffle carries about a quarter of the bytes (series keys repeat label names),
    for ~0.1-0.2 ms per 1000-series block; uncompressed suits a shuffle that stays in memory (the local runner)."""
    nested = rows.schema.equals(_BLOCK_ROWS)
    messages = (series.serialize(), rows.serialize())
    stored = [_SERIES_CODEC.compress(messages[0], asbytes=True),
              pa.compress(messages[1], codec=_BLOCK_CODEC, asbytes=True)] if compress else messages
    header = _HEADER.pack(messages[0].size | (0 if compress else _RAW_BLOCK), messages[1].size,
                          len(stored[0]), len(stored[1]), nested)
    return b"".join((header, *stored))


def _unpack_blocks(data: bytes) -> Iterator[tuple[pa.RecordBatch, pa.RecordBatch]]:
    """The blocks packed one after the other in `data` (a partition's float rows, then the rows of its
    histograms and exemplars: two pieces of one packed block, so neither is packed twice)."""
    view, at = memoryview(data), 0
    while at < len(view):
        try:
            series_size, rows_size, series_stored, rows_stored, nested = _HEADER.unpack_from(view, at)
            at += _HEADER.size
            raw = bool(series_size & _RAW_BLOCK)
            series_size &= ~_RAW_BLOCK
            if series_stored + rows_stored > len(view) - at:
                raise pa.ArrowInvalid(f"block holds {len(view) - at} bytes, its header says "
                                      f"{series_stored + rows_stored}")
            if raw and (series_stored, rows_stored) != (series_size, rows_size):
                raise pa.ArrowInvalid(f"block holds {series_stored} + {rows_stored} bytes, its header says "
                                      f"{series_size} + {rows_size}")
            messages = []
            for size, stored in ((series_size, series_stored), (rows_size, rows_stored)):
                piece = view[at:at + stored]
                messages.append(pa.py_buffer(piece) if raw else pa.decompress(piece, size, codec=_BLOCK_CODEC))
                at += stored
            yield (pa.ipc.read_record_batch(messages[0], _BLOCK_SERIES),
                   pa.ipc.read_record_batch(messages[1], _BLOCK_ROWS if nested else _FLOAT_ROWS))
        except (struct.error, pa.ArrowException) as exc:
            raise RecordError(f"not a Parquet archive block: {exc}") from exc


def series_batch(keys: pa.Array) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([keys], schema=_BLOCK_SERIES)


def series_columns(keys: pa.Array) -> tuple[pa.Array, pa.Array]:
    """series_key's inverse, in C over the whole array: the names and the label maps of `keys`."""
    parts = pc.split_pattern(keys, pattern=_TERMINATOR.encode())  # name, label, value, ..., "" (after the last)
    strings = pc.replace_substring(parts.flatten(), pattern=_ESCAPED_NUL.encode(), replacement=b"\x00")
    strings = strings.cast(pa.string())
    offsets = parts.offsets.to_numpy().astype(np.int64)
    starts, ends = offsets[:-1], offsets[1:]
    label_part = np.ones(len(strings), bool)
    label_part[starts] = False
    label_part[ends - 1] = False
    pairs = np.flatnonzero(label_part)
    map_offsets = np.zeros(len(keys) + 1, np.int32)
    np.cumsum((ends - starts - 2) // 2, out=map_offsets[1:])
    labels = pa.MapArray.from_arrays(pa.array(map_offsets), strings.take(pa.array(pairs[0::2])),
                                     strings.take(pa.array(pairs[1::2])))
    return strings.take(pa.array(starts)), labels.cast(LABELS)


def rows_batch(series: pa.Array, timestamps: pa.Array, values: pa.Array, specials: pa.Array, types: pa.Array,
               starts: pa.Array, histograms: pa.Array | None = None, exemplars: pa.Array | None = None
               ) -> pa.RecordBatch:
    """A block's rows; float blocks leave out the histogram and exemplar columns (all NULL)."""
    floats = [series, timestamps, values, specials, types, starts]
    if histograms is None and exemplars is None:
        return pa.RecordBatch.from_arrays(floats, schema=_FLOAT_ROWS)
    n = len(series)
    return pa.RecordBatch.from_arrays([
        *floats, histograms if histograms is not None else pa.nulls(n, HISTOGRAM_TYPE),
        exemplars if exemplars is not None else pa.nulls(n, EXEMPLAR_TYPE)], schema=_BLOCK_ROWS)


def records_block(records: Sequence[str], compress: bool = True) -> bytes:
    """A block from JSON records (metric_to_log's): the rows of the histograms and exemplars of the series that
    carry them (their lines come from metric_to_log.side_lines, ParquetFormat.convert), and ArchiveFormat.encode."""
    stamps = Timestamps()
    series: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    rows = []
    for text in records:
        record = json.loads(text)
        kind = record_kind(record)
        key = (record["name"], tuple(sorted(record["tags"].items())))
        number = series.get(key)
        if number is None:
            number = series[key] = len(series)
        value = special = histogram = exemplar = None
        if kind == HISTOGRAM:
            histogram = histogram_row(record[kind])
        elif kind == EXEMPLAR:
            ex = record[kind]
            exemplar = {"value": decode_value(ex["value"]), "labels": sorted(ex["labels"].items())}
        else:
            value, special = split_value(record[kind]["value"])
        start = record.get("start_timestamp")
        rows.append((number, stamps.to_ms(record["timestamp"]), value, special, kind,
                     stamps.to_ms(start) if start else None, histogram, exemplar))
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in range(8)]
    keys = list(series)
    return pack_block(
        series_batch(pa.array([series_key(*k) for k in keys], pa.binary())),
        rows_batch(*(pa.array(column, field.type) for column, field in zip(columns, _BLOCK_ROWS, strict=True))),
        compress)


def file_table(blocks: Iterable[bytes]) -> pa.Table:
    """A file's blocks as one table, rows sorted by series (name, then labels), then time, then type
    (samples, histograms, exemplars); rows that tie keep their order across and within blocks."""
    series_parts, row_parts, row_series, offset = [], [], [], 0
    for series, rows in (piece for data in blocks for piece in _unpack_blocks(data)):
        series_parts.append(series)
        row_parts.append(rows)
        row_series.append(rows.column("series").to_numpy() + offset)
        offset += len(series)
    if not row_parts:
        return SCHEMA.empty_table()
    keys = pa.Table.from_batches(series_parts).column("key")
    # one number per distinct series of the file (a series is in many blocks, or under two slots), ranked
    # by its key: sorting compares integers, and names and labels are decoded once per distinct series
    encoded = pc.dictionary_encode(keys).combine_chunks()
    rank = pc.rank(encoded.dictionary, tiebreaker="first").to_numpy()
    row_distinct = encoded.indices.to_numpy()[np.concatenate(row_series)]
    rows = pa.Table.from_batches([part.select(_FLOAT_ROW_NAMES) for part in row_parts]).combine_chunks()
    stamps = rows.column("timestamp").to_numpy()
    nested = [part for part in row_parts if part.num_columns > len(_FLOAT_ROW_NAMES)]
    if nested:  # histograms or exemplars: they sort after the samples of the same series and time
        types = rows.column("type")
        type_order = (pc.equal(types, HISTOGRAM).to_numpy(zero_copy_only=False).astype(np.int8)
                      + 2 * pc.equal(types, EXEMPLAR).to_numpy(zero_copy_only=False).astype(np.int8))
        order = np.lexsort((type_order, stamps, rank[row_distinct]))  # stable, last key first
    else:
        order = np.lexsort((stamps, rank[row_distinct]))
    take = pa.array(order)
    names, labels = series_columns(encoded.dictionary)
    rows = rows.take(take)
    name_column, label_column = _series_columns_by_group(names, labels, row_distinct[order])
    return pa.Table.from_arrays([
        name_column, label_column,
        rows.column("timestamp").cast(_TIME), rows.column("value"), rows.column("special"), rows.column("type"),
        rows.column("start_timestamp").cast(_TIME), *_nested_columns(row_parts, nested, take, len(rows)),
    ], schema=_DICTIONARY_SCHEMA)


def _series_columns_by_group(names: pa.Array, labels: pa.MapArray, by_series: np.ndarray
                             ) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """The name and labels columns of rows whose distinct series are `by_series` (sorted by series), as
    dictionary arrays in one chunk per row group, each chunk's dictionaries holding only the strings of its
    own series. The writer then writes indices without hashing a string (it dictionary-encodes these
    columns anyway), and each row group's dictionary pages hold its own strings, as they do when it is handed
    plain strings: one dictionary for the whole file would be written whole into every row group.
    The file reads back as the same strings (only its dictionary pages' order may differ)."""
    name_chunks, label_chunks = [], []
    for first in range(0, len(by_series), ROW_GROUP_ROWS):
        group = by_series[first:first + ROW_GROUP_ROWS]
        new = np.empty(len(group), bool)  # rows are sorted by series: a series' rows are one run
        new[0] = True
        np.not_equal(group[1:], group[:-1], out=new[1:])
        local = pa.array(np.cumsum(new, dtype=np.int32) - 1)
        used = pa.array(group[new])
        group_labels = labels.take(used)
        name_chunks.append(pc.dictionary_encode(names.take(used)).take(local))
        label_chunks.append(pa.MapArray.from_arrays(group_labels.offsets, pc.dictionary_encode(group_labels.keys),
                                                    pc.dictionary_encode(group_labels.items)).take(local))
    return (pa.chunked_array(name_chunks, _DICTIONARY_SCHEMA.field("name").type),
            pa.chunked_array(label_chunks, _DICTIONARY_SCHEMA.field("labels").type))


def _nested_columns(row_parts: list[pa.RecordBatch], nested: list[pa.RecordBatch], take: pa.Array, count: int
                    ) -> list[pa.Array | pa.ChunkedArray]:
    """The histogram and exemplar columns, in the file's row order; all NULL when no block has them."""
    if not nested:
        return [pa.nulls(count, HISTOGRAM_TYPE), pa.nulls(count, EXEMPLAR_TYPE)]
    return [pa.chunked_array([part.column(name) if name in part.schema.names else pa.nulls(part.num_rows, kind)
                              for part in row_parts], kind).take(take)
            for name, kind in (("histogram", HISTOGRAM_TYPE), ("exemplar", EXEMPLAR_TYPE))]


def encode_table(records: Sequence[str]) -> pa.Table:
    """JSON records (metric_to_log's) -> one table, rows sorted by series, then time."""
    return file_table([records_block(records)])


def table_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=ROW_GROUP_ROWS, compression=COMPRESSION,
                   compression_level=COMPRESSION_LEVEL, use_dictionary=DICTIONARY_COLUMNS,
                   write_statistics=STATISTICS_COLUMNS, store_schema=False)
    return sink.getvalue()


# The series columns as the file stores them, dictionary-encoded: read as dictionaries, they are not decoded
# into a string per row (and the run finder compares their codes without encoding them again).
SERIES_DICTIONARIES = ("name", "labels.key_value.key", "labels.key_value.value")
# What a float sample's row is read from; the other columns hold native histograms and exemplars.
POINT_COLUMNS = ("histogram", "exemplar")
FLOAT_COLUMNS = [name for name in SCHEMA.names if name not in POINT_COLUMNS]


def read_table(stored: bytes) -> pa.Table:
    return _read_with_columns(stored, SCHEMA, "Parquet file lacks the archive's column(s)")


def read_series_table(stored: bytes) -> pa.Table:
    """A whole Parquet file, name and label strings as dictionaries with one dictionary per column (the
    restore's read: table_columns, table_samples). A file of float samples only has its histogram and
    exemplar columns as nulls, not read (half of the read's work)."""
    try:
        present = pq.read_schema(io.BytesIO(stored)).names
        missing = [name for name in SCHEMA.names if name not in present]
        if missing:
            raise RecordError(f"Parquet file lacks the archive's column(s) {', '.join(missing)}")
        table = pq.read_table(io.BytesIO(stored), columns=FLOAT_COLUMNS, read_dictionary=list(SERIES_DICTIONARIES))
        if pc.all(pc.is_in(table.column("type"), value_set=pa.array(SAMPLE_KINDS))).as_py() is False:
            # histograms or exemplars (or a row of no kind, for table_samples to name): every column
            table = pq.read_table(io.BytesIO(stored), read_dictionary=list(SERIES_DICTIONARIES))
        else:
            for name in POINT_COLUMNS:
                table = table.append_column(SCHEMA.field(name), pa.nulls(len(table), SCHEMA.field(name).type))
    except (pa.ArrowException, OSError) as exc:
        raise RecordError(f"not a readable Parquet file: {exc}") from exc
    return table.unify_dictionaries()


def _read_with_columns(stored: bytes, schema: pa.Schema, lacking: str) -> pa.Table:
    """A whole Parquet file as a table holding every column of `schema`; RecordError (`lacking` names the
    missing ones) when it is not one."""
    try:
        table = pq.read_table(io.BytesIO(stored))
    except (pa.ArrowException, OSError) as exc:
        raise RecordError(f"not a readable Parquet file: {exc}") from exc
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise RecordError(f"{lacking} {', '.join(missing)}")
    return table


def _encoded(value: float) -> Any:
    """A float as the NDJSON shape holds it: a number when finite, else the special string."""
    return value if math.isfinite(value) else json.loads(encode_value(value))


def _histogram_record(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["count"] = row["count_int"] if row["count_int"] is not None else _encoded(row["count_float"])
    out["sum"] = _encoded(row["sum"])
    out["schema"] = row["schema"]
    out["zero_threshold"] = _encoded(row["zero_threshold"])
    out["zero_count"] = (row["zero_count_int"] if row["zero_count_int"] is not None
                         else _encoded(row["zero_count_float"]))
    for side in ("negative", "positive"):
        if row[f"{side}_spans"]:
            out[f"{side}_spans"] = [[s["offset"], s["length"]] for s in row[f"{side}_spans"]]
        if row[f"{side}_deltas"]:
            out[f"{side}_deltas"] = row[f"{side}_deltas"]
        if row[f"{side}_counts"]:
            out[f"{side}_counts"] = [_encoded(c) for c in row[f"{side}_counts"]]
    if row["custom_values"]:
        out["custom_values"] = [_encoded(c) for c in row["custom_values"]]
    out["reset_hint"] = row["reset_hint"]
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _stamp(moment: datetime) -> str:
    return format_ms((moment - _EPOCH) // timedelta(milliseconds=1))  # exact: integer arithmetic


def table_records(table: pa.Table) -> list[dict[str, Any]]:
    """Rows back as records in the NDJSON shape."""
    out = []
    for row in table.select(SCHEMA.names).to_pylist():
        record: dict[str, Any] = {"name": row["name"], "tags": dict(row["labels"]),
                                  "timestamp": _stamp(row["timestamp"]), "kind": "absolute"}
        kind = row["type"]
        if kind == HISTOGRAM:
            record[kind] = _histogram_record(row["histogram"])
        elif kind == EXEMPLAR:
            record[kind] = {"value": _encoded(row["exemplar"]["value"]), "labels": dict(row["exemplar"]["labels"])}
        elif kind in ("counter", "gauge"):
            record[kind] = {"value": row["special"] if row["special"] is not None else _encoded(row["value"])}
        else:
            raise RecordError(f"unknown row type {kind!r}")
        if row["start_timestamp"] is not None:
            record["start_timestamp"] = _stamp(row["start_timestamp"])
        out.append(record)
    return out


def _series_runs(table: pa.Table) -> list[int]:
    """Row numbers where a new series starts (rows are sorted by series), found with pyarrow and numpy, no
    Python per row: a row starts a series when its name, its number of labels, or any label (compared with
    the same position in the row before, as dictionary codes of the keys and of the values) differs."""
    n = len(table)
    if not n:
        return []
    names = table.column("name").combine_chunks()
    if pa.types.is_dictionary(names.type):  # one dictionary (read_series_table): equal names, equal codes
        names = names.indices
    changed = pc.not_equal(names.slice(1), names.slice(0, n - 1)).fill_null(True).to_numpy(zero_copy_only=False)
    changed = changed.copy()  # writable
    labels = table.column("labels").combine_chunks()
    offsets = labels.offsets.to_numpy().astype(np.int64)  # into labels.keys / labels.items (the whole children)
    lengths = np.diff(offsets)
    changed |= lengths[1:] != lengths[:-1]
    rows = np.flatnonzero(~changed) + 1  # rows with as many labels as the row before: compare label by label
    counts = lengths[rows]
    total = int(counts.sum())
    if total:
        element = np.repeat(offsets[rows] - np.cumsum(counts) + counts, counts) + np.arange(total)
        partner = element - np.repeat(lengths[rows - 1], counts)  # the same position in the row before
        differs = np.zeros(total, bool)
        for strings in (labels.keys, labels.items):
            codes = _codes(strings)
            differs |= codes[element] != codes[partner]
        changed[np.repeat(rows, counts)[differs] - 1] = True
    return [0, *(np.flatnonzero(changed) + 1).tolist()]


def _codes(strings: pa.Array) -> np.ndarray:
    """Equal strings, equal numbers (nulls one number of their own): a dictionary's indices when the column was
    read as one (with one dictionary), else encoded here."""
    if not pa.types.is_dictionary(strings.type):
        strings = pc.dictionary_encode(strings, null_encoding="encode")
    elif strings.null_count:
        return strings.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    return strings.indices.to_numpy(zero_copy_only=False)


def _labels_of(labels: pa.ChunkedArray, rows: list[int]) -> list[list[tuple[str, str]]]:
    """The label pairs of `rows`, as `to_pylist` gives them, but with the keys and values converted as two flat
    string arrays (a map of dictionaries converts element by element, ~10x slower)."""
    if not rows:
        return []
    taken = labels.take(rows).combine_chunks()
    offsets = taken.offsets.to_numpy().tolist()
    keys, values = taken.keys, taken.items
    if pa.types.is_dictionary(keys.type):
        keys = keys.dictionary_decode()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    flat = list(zip(keys.to_pylist(), values.to_pylist(), strict=True))
    return [flat[a:b] for a, b in zip(offsets, offsets[1:], strict=False)]


def table_columns(table: pa.Table) -> SampleColumns:
    """Rows as columns (the restore's path for float samples: no Python object per row); other rows as
    Samples, through table_samples."""
    column = table.column
    starts = _series_runs(table)
    bounds = np.asarray([*starts, len(table)], np.int64)
    row_run = np.repeat(np.arange(len(starts), dtype=np.int64), np.diff(bounds)) if len(table) else \
        np.zeros(0, np.int64)
    kind_column = column("type")
    kinds = (pc.equal(kind_column, SAMPLE_KINDS[0]).to_numpy(zero_copy_only=False).astype(np.int8)
             + 2 * pc.equal(kind_column, SAMPLE_KINDS[1]).to_numpy(zero_copy_only=False).astype(np.int8))
    values = np.array(column("value").to_numpy(zero_copy_only=False), np.float64)
    special = column("special")
    if special.null_count < len(table):
        for i in pc.indices_nonzero(pc.is_valid(special)).to_numpy().tolist():
            values[i] = decode_value(special[i].as_py())
    missing = (kinds > 0) & column("value").is_null().to_numpy(zero_copy_only=False) & \
        special.is_null().to_numpy(zero_copy_only=False)
    if missing.any():
        raise RecordError(f"row {int(np.flatnonzero(missing)[0])}: neither value nor special")
    others = list(table_samples(table.filter(pa.array(kinds == 0)))) if (kinds == 0).any() else []
    start_column = column("start_timestamp")
    start_stamps = None
    if start_column.null_count < len(table):
        start_stamps = start_column.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    return SampleColumns(column("name").take(starts).to_pylist() if starts else [],
                         _labels_of(column("labels"), starts), row_run,
                         column("timestamp").cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64),
                         values, kinds, others, start_stamps)


def table_samples(table: pa.Table) -> Iterator[Sample]:
    """Rows straight to decoded samples (the restore's path): columns convert in C, no record dicts, and a
    series' name and labels become Python objects once per run of its rows."""
    column = table.column
    starts = _series_runs(table)
    names = column("name").take(starts).to_pylist()
    labels = column("labels").take(starts).to_pylist()
    kinds = column("type").to_pylist()
    stamps = column("timestamp").cast(pa.int64()).to_pylist()
    values, specials = column("value").to_pylist(), column("special").to_pylist()
    histograms = column("histogram").to_pylist() if column("histogram").null_count < len(table) else None
    exemplars = column("exemplar").to_pylist() if column("exemplar").null_count < len(table) else None
    start_stamps = column("start_timestamp").cast(pa.int64()).to_pylist() \
        if column("start_timestamp").null_count < len(table) else None
    bounds = [*starts, len(table)]
    for run, (first, end) in enumerate(zip(bounds, bounds[1:], strict=False)):
        name, pairs = names[run], labels[run]
        for i in range(first, end):
            kind = kinds[i]
            payload: object
            if kind in SAMPLE_KINDS:
                special = specials[i]
                payload = values[i] if special is None else decode_value(special)
                if payload is None:
                    raise RecordError(f"row {i}: neither value nor special")
            elif kind == HISTOGRAM and histograms is not None and histograms[i] is not None:
                payload = histogram_fields(_histogram_record(histograms[i]))
            elif kind == EXEMPLAR and exemplars is not None and exemplars[i] is not None:
                payload = (exemplars[i]["value"], sorted(exemplars[i]["labels"]))
            else:
                raise RecordError(f"row {i}: type {kind!r} without its column")
            yield Sample(name, pairs, stamps[i], kind, payload, (start_stamps[i] or 0) if start_stamps else 0)


def encode_metadata(records: Sequence[MetadataRecord]) -> bytes:
    """A companion metadata file: rows sorted by name, then time."""
    rows = sorted(records, key=lambda r: (r.name, r.ms))
    table = pa.Table.from_arrays([
        pa.array([r.name for r in rows], pa.string()), pa.array([r.ms for r in rows], pa.int64()).cast(_TIME),
        pa.array([r.type for r in rows], pa.string()), pa.array([r.help for r in rows], pa.string()),
        pa.array([r.unit for r in rows], pa.string())], schema=METADATA_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL,
                   use_dictionary=["type", "unit"], write_statistics=True, store_schema=False)
    return sink.getvalue()


def read_metadata(stored: bytes) -> list[MetadataRecord]:
    table = _read_with_columns(stored, METADATA_SCHEMA, "Parquet metadata file lacks the column(s)")
    columns = [table.column(n) for n in METADATA_SCHEMA.names]
    if any(c.null_count for c in columns):
        raise RecordError("Parquet metadata file with NULL fields")
    names, stamps, types, helps, units = (c.to_pylist() for c in (
        columns[0], columns[1].cast(pa.int64()), columns[2], columns[3], columns[4]))
    return [MetadataRecord(*fields) for fields in zip(names, stamps, types, helps, units, strict=True)]
