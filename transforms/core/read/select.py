"""Choosing what to read (partitions, row filter, columns) and turning the rows read into series.

The archive's partitions are tenant=T/date=YYYY-MM-DD/hour=HH, by each sample's own time, so a query
reads only the hours its [start, end] range touches. Within a file, the filter on timestamp (and on name
when a matcher pins it) lets pyarrow skip row groups by their statistics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.archive.records import SAMPLE_KINDS, decode_value
from transforms.core.protocol import METRIC_NAME_LABEL
from transforms.core.read.matchers import Matcher, required_name, series_matches

HOUR_MS = 3_600_000
# Float samples only: native histograms and exemplars in the archive are not served (docs/query.md).
COLUMNS = ["name", "labels", "timestamp", "value", "special", "type"]


@dataclasses.dataclass
class Series:
    labels: list[tuple[str, str]]  # sorted by name, __name__ included
    timestamps: np.ndarray  # int64 ms, strictly increasing
    values: np.ndarray  # float64, NaN payloads (stale markers) as archived


def hour_partitions(start_ms: int, end_ms: int) -> list[tuple[str, str]]:
    """(date=..., hour=...) folder names of every hour that [start_ms, end_ms] touches."""
    first, last = max(start_ms, 0) // HOUR_MS, max(end_ms, 0) // HOUR_MS
    out = []
    for hour in range(first, last + 1):
        moment = datetime.fromtimestamp(hour * 3600, UTC)
        out.append((f"date={moment:%Y-%m-%d}", f"hour={moment:%H}"))
    return out


def row_filter(start_ms: int, end_ms: int, matchers: Iterable[Matcher]) -> pc.Expression:
    """The predicate pushed down to the Parquet reader: time range, float samples, and a pinned name."""
    time_type = pa.timestamp("ms", tz="UTC")
    expression = ((pc.field("timestamp") >= pa.scalar(start_ms, pa.int64()).cast(time_type))
                  & (pc.field("timestamp") <= pa.scalar(end_ms, pa.int64()).cast(time_type))
                  & pc.field("type").isin(list(SAMPLE_KINDS)))
    name = required_name(matchers)
    if name is not None:
        expression = expression & (pc.field("name") == name)
    return expression


def _exact_values(table: pa.Table) -> np.ndarray:
    """The value column with each special ('StaleNaN', 'NaN:0x...') restored to its exact bits."""
    values = np.array(table.column("value").to_numpy(zero_copy_only=False), np.float64)
    special = table.column("special")
    if special.null_count < len(table):
        for i in pc.indices_nonzero(pc.is_valid(special)).to_numpy().tolist():
            values[i] = decode_value(special[i].as_py())
    return values


def select_series(table: pa.Table, matchers: Iterable[Matcher]) -> list[Series]:
    """Rows (any order, any number of files) -> the matching series, sorted by labels, each sorted by time.

    Matchers run once per distinct series, not per row. A sample archived twice (the same series and
    timestamp in two files) is returned once: Prometheus needs strictly increasing timestamps.
    """
    matchers = tuple(matchers)
    if not len(table):
        return []
    table = table.combine_chunks()
    series_ids, keys = _series_ids(table)
    first_rows = _first_row_of_each(series_ids, len(keys))
    names = table.column("name").take(pa.array(first_rows)).to_pylist()
    labels = table.column("labels").take(pa.array(first_rows)).to_pylist()
    wanted = np.zeros(len(keys), bool)
    label_sets: dict[int, list[tuple[str, str]]] = {}
    for number, (name, pairs) in enumerate(zip(names, labels, strict=True)):
        as_dict = dict(pairs)
        if series_matches(matchers, name, as_dict):
            wanted[number] = True
            label_sets[number] = sorted([(METRIC_NAME_LABEL, name), *as_dict.items()])
    rows = np.flatnonzero(wanted[series_ids])
    if not len(rows):
        return []
    stamps = table.column("timestamp").cast(pa.int64()).to_numpy(zero_copy_only=False)[rows]
    values = _exact_values(table)[rows]
    ids = series_ids[rows]
    order = np.lexsort((stamps, ids))
    ids, stamps, values = ids[order], stamps[order], values[order]
    keep = np.ones(len(ids), bool)
    keep[1:] = (ids[1:] != ids[:-1]) | (stamps[1:] != stamps[:-1])
    ids, stamps, values = ids[keep], stamps[keep], values[keep]
    bounds = np.flatnonzero(np.diff(ids)) + 1
    out = [Series(label_sets[int(run_ids[0])], run_stamps, run_values) for run_ids, run_stamps, run_values in
           zip(np.split(ids, bounds), np.split(stamps, bounds), np.split(values, bounds), strict=True)]
    out.sort(key=lambda s: s.labels)
    return out


class SeriesFilter:
    """Keeps the rows of matching series, batch by batch, so memory holds only what a query returns.

    Each distinct series is matched once: its verdict is cached by its joined name-and-labels key.
    """

    def __init__(self, matchers: Iterable[Matcher]) -> None:
        self.matchers = tuple(matchers)
        self._verdicts: dict[bytes, bool] = {}

    def keep(self, table: pa.Table) -> pa.Table:
        if not len(table):
            return table
        series_ids, keys = _series_ids(table)
        verdicts = np.zeros(len(keys), bool)
        unknown = [i for i, key in enumerate(keys.to_pylist()) if key not in self._verdicts]
        if unknown:
            first_rows = pa.array(_first_row_of_each(series_ids, len(keys))[unknown])
            names = table.column("name").take(first_rows).to_pylist()
            labels = table.column("labels").take(first_rows).to_pylist()
            key_list = keys.to_pylist()
            for number, name, pairs in zip(unknown, names, labels, strict=True):
                self._verdicts[key_list[number]] = series_matches(self.matchers, name, dict(pairs))
        for number, key in enumerate(keys.to_pylist()):
            verdicts[number] = self._verdicts[key]
        if verdicts.all():
            return table
        return table.filter(pa.array(verdicts[series_ids]))


def _series_ids(table: pa.Table) -> tuple[np.ndarray, pa.Array]:
    """A number per row naming its series (name + labels), computed in C by dictionary-encoding a joined key.

    The parts are joined as bytes with 0xFF and 0xFE, which never occur in UTF-8, so the key is injective
    without escaping anything.
    """
    labels = table.column("labels").combine_chunks()
    as_binary = pa.list_(pa.binary())
    keys = pc.binary_join(pa.ListArray.from_arrays(labels.offsets, labels.keys.cast(pa.binary())).cast(as_binary),
                          b"\xff")
    values = pc.binary_join(pa.ListArray.from_arrays(labels.offsets, labels.items.cast(pa.binary())).cast(as_binary),
                            b"\xff")
    name = table.column("name").combine_chunks().cast(pa.binary())
    joined = pc.binary_join_element_wise(name, keys, values, b"\xfe")
    encoded = pc.dictionary_encode(joined)
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def _first_row_of_each(series_ids: np.ndarray, count: int) -> np.ndarray:
    first = np.full(count, len(series_ids), np.int64)
    np.minimum.at(first, series_ids, np.arange(len(series_ids), dtype=np.int64))
    return first
