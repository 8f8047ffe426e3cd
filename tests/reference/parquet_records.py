"""The Parquet table as the archive first built it: from the NDJSON records, one json.loads per line.

The oracle for transforms/core/archive/parquet_columns.py, which builds the same table from a batch's columns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa

from transforms.core.archive.parquet import EXEMPLAR_TYPE, HISTOGRAM_TYPE, SCHEMA, histogram_row, split_value
from transforms.core.archive.records import EXEMPLAR, HISTOGRAM, Timestamps, decode_value, record_kind

_LABELS = SCHEMA.field("labels").type
_TIME = SCHEMA.field("timestamp").type
_KIND_ORDER = {"counter": 0, "gauge": 0, HISTOGRAM: 1, EXEMPLAR: 2}


def encode_table(records: Sequence[str]) -> pa.Table:
    """JSON records (metric_to_log's) -> one table, rows sorted by series, then time."""
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
