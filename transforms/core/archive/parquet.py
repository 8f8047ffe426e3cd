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
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms.core.archive.metric_to_log import encode_value
from transforms.core.archive.records import (
    EXEMPLAR,
    HISTOGRAM,
    RESET_HINTS,
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

ROW_GROUP_ROWS = 65_536  # see docs/pipeline.md: pruning granularity vs per-group overhead
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
_HINT_NAMES = {number: name for name, number in RESET_HINTS.items()}

_LABELS = pa.map_(pa.string(), pa.string())
_TIME = pa.timestamp("ms", tz="UTC")
_SPANS = pa.list_(pa.struct([("offset", pa.int32()), ("length", pa.uint32())]))
HISTOGRAM_TYPE = pa.struct([
    ("count_int", pa.uint64()), ("count_float", pa.float64()), ("sum", pa.float64()), ("schema", pa.int32()),
    ("zero_threshold", pa.float64()), ("zero_count_int", pa.uint64()), ("zero_count_float", pa.float64()),
    ("negative_spans", _SPANS), ("negative_deltas", pa.list_(pa.int64())), ("negative_counts", pa.list_(pa.float64())),
    ("positive_spans", _SPANS), ("positive_deltas", pa.list_(pa.int64())), ("positive_counts", pa.list_(pa.float64())),
    ("custom_values", pa.list_(pa.float64())), ("reset_hint", pa.string()),
])
EXEMPLAR_TYPE = pa.struct([("value", pa.float64()), ("labels", _LABELS)])
SCHEMA = pa.schema([
    ("name", pa.string()), ("labels", _LABELS), ("timestamp", _TIME), ("value", pa.float64()),
    ("special", pa.string()), ("type", pa.string()), ("start_timestamp", _TIME),
    ("histogram", HISTOGRAM_TYPE), ("exemplar", EXEMPLAR_TYPE),
])
# Companion metadata files (ARCHIVE/_metadata/...): one row per metric family seen in that hour
METADATA_SCHEMA = pa.schema([("name", pa.string()), ("timestamp", _TIME), ("type", pa.string()),
                             ("help", pa.string()), ("unit", pa.string())])
DICTIONARY_COLUMNS = ["name", "labels.key_value.key", "labels.key_value.value", "special", "type",
                       "exemplar.labels.key_value.key", "exemplar.labels.key_value.value"]
_KIND_ORDER = {"counter": 0, "gauge": 0, HISTOGRAM: 1, EXEMPLAR: 2}


def _special(value: Any) -> tuple[float | None, str | None]:
    """(value column, special column) of an encoded sample value."""
    if isinstance(value, str) and value not in ("+Inf", "-Inf"):
        decode_value(value)  # rejects what is not a known special value
        return None, value
    return decode_value(value), None


def _histogram_row(encoded: Mapping[str, Any]) -> dict[str, Any]:
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


def encode_table(records: Sequence[str]) -> pa.Table:
    """JSON records (metric_to_log's) -> one table, rows sorted by series, then time.

    Each series is interned once (its name and sorted labels); rows carry its number, so sorting compares
    integers and the name and labels columns are built from the distinct series, then repeated by `take`.
    """
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
            histogram = _histogram_row(record[kind])
        elif kind == EXEMPLAR:
            ex = record[kind]
            exemplar = {"value": decode_value(ex["value"]), "labels": sorted(ex["labels"].items())}
        else:
            value, special = _special(record[kind]["value"])
        start = record.get("start_timestamp")
        rows.append((number, stamps.to_ms(record["timestamp"]), _KIND_ORDER[kind], value, special, kind,
                     stamps.to_ms(start) if start else None, histogram, exemplar))
    keys = list(series)
    rank = [0] * len(keys)
    for position, number in enumerate(sorted(range(len(keys)), key=keys.__getitem__)):
        rank[number] = position
    rows.sort(key=lambda r: (rank[r[0]], r[1], r[2]))
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in range(9)]
    distinct = pa.array(columns[0], pa.int32())
    names = pa.array([k[0] for k in keys], pa.string()).take(distinct)
    labels = pa.array([list(k[1]) for k in keys], _LABELS).take(distinct)
    return pa.Table.from_arrays([
        names, labels, pa.array(columns[1], pa.int64()).cast(_TIME), pa.array(columns[3], pa.float64()),
        pa.array(columns[4], pa.string()), pa.array(columns[5], pa.string()),
        pa.array(columns[6], pa.int64()).cast(_TIME), pa.array(columns[7], HISTOGRAM_TYPE),
        pa.array(columns[8], EXEMPLAR_TYPE),
    ], schema=SCHEMA)


def write_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=ROW_GROUP_ROWS, compression=COMPRESSION,
                   compression_level=COMPRESSION_LEVEL, use_dictionary=DICTIONARY_COLUMNS, write_statistics=True,
                   store_schema=False)
    return sink.getvalue()


def read_table(stored: bytes) -> pa.Table:
    return _read_with_columns(stored, SCHEMA, "Parquet file lacks the archive's column(s)")


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


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


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
    """Row numbers where a new series starts (rows are sorted by series), found in C: each row's name and
    labels joined into one string, escaped so the join is injective, and compared with the row before."""
    def escaped(strings: pa.Array) -> pa.Array:
        for old, new in (("\\", "\\\\"), ("\x00", "\\0"), ("\x01", "\\1")):
            strings = pc.replace_substring(strings, old, new)
        return strings

    labels = table.column("labels").combine_chunks()
    keys = pc.binary_join(pa.ListArray.from_arrays(labels.offsets, escaped(labels.keys)), "\x00")
    values = pc.binary_join(pa.ListArray.from_arrays(labels.offsets, escaped(labels.items)), "\x00")
    joined = pc.binary_join_element_wise(escaped(table.column("name").combine_chunks()), keys, values, "\x01")
    changed = pc.not_equal(joined.slice(1), joined.slice(0, len(joined) - 1))
    return [0, *(pc.indices_nonzero(changed).to_numpy() + 1).tolist()] if len(table) else []


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
                         column("labels").take(starts).to_pylist() if starts else [], row_run,
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
