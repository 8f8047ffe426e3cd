"""Choosing what to read (partitions, row filter, columns) and turning the rows read into series.

The archive's partitions are tenant=T/date=YYYY-MM-DD/hour=HH, by each sample's own time, so a query
reads only the hours its [start, end] range touches. Within a file, the filter on timestamp (and on name
when a matcher pins it) lets pyarrow skip row groups by their statistics.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.archive.records import HISTOGRAM, SAMPLE_KINDS, decode_value
from transforms.core.protocol import METRIC_NAME_LABEL
from transforms.core.read.matchers import Matcher, required_name, series_matches

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# Float samples are served; a query whose series hold native histograms is refused (docs/query.md), so their
# rows are read too (the type column tells them apart); exemplars are left out.
_NONE = np.zeros(0, np.int64)  # no local series
COLUMNS = ["name", "labels", "timestamp", "value", "special", "type"]
_KEPT_TYPES = pa.array([*SAMPLE_KINDS, HISTOGRAM])


@dataclasses.dataclass
class Series:
    labels: list[tuple[str, str]]  # sorted by name, __name__ included
    timestamps: np.ndarray  # int64 ms, strictly increasing
    values: np.ndarray  # float64, NaN payloads (stale markers) as archived


def partition_start_ms(date_folder: str, hour_folder: str | None = None) -> int | None:
    """Where a `date=YYYY-MM-DD` (and `hour=HH`) folder's time begins, in epoch ms; None for another name."""
    try:
        moment = datetime.strptime(date_folder, "date=%Y-%m-%d").replace(tzinfo=UTC)
        if hour_folder is not None:
            if not hour_folder.startswith("hour=") or len(hour_folder) != 7:
                return None
            hour = int(hour_folder[5:])
            if not 0 <= hour < 24:
                return None
            moment = moment.replace(hour=hour)
    except ValueError:
        return None
    return int(moment.timestamp()) * 1000


def overlaps(folder_start_ms: int | None, length_ms: int, start_ms: int, end_ms: int) -> bool:
    """Whether a partition of [folder_start_ms, folder_start_ms + length_ms) may hold samples of [start, end]."""
    return folder_start_ms is not None and folder_start_ms <= end_ms and folder_start_ms + length_ms > start_ms


def row_mask(table: pa.Table, start_ms: int, end_ms: int, name: str | None) -> pa.BooleanArray:
    """The rows to keep of a batch read from the row groups pruning left: in [start_ms, end_ms], float samples
    or native histograms (to refuse them), and of the pinned name."""
    stamps = table.column("timestamp").cast(pa.int64())
    kept = pc.and_kleene(pc.greater_equal(stamps, start_ms), pc.less_equal(stamps, end_ms))
    kept = pc.and_kleene(kept, pc.is_in(table.column("type"), value_set=_KEPT_TYPES))
    if name is not None:
        kept = pc.and_kleene(kept, pc.equal(table.column("name"), name))
    return pc.fill_null(kept, False).combine_chunks()


def _exact_values(table: pa.Table) -> np.ndarray:
    """The value column with each special ('StaleNaN', 'NaN:0x...') restored to its exact bits."""
    values = np.array(table.column("value").to_numpy(zero_copy_only=False), np.float64)
    special = table.column("special")
    if special.null_count < len(table):
        for i in pc.indices_nonzero(pc.is_valid(special)).to_numpy().tolist():
            values[i] = decode_value(special[i].as_py())
    return values


@dataclasses.dataclass(frozen=True)
class GroupSeries:
    """Which series each row of some rows (a row group) belongs to: local series numbers in runs (rows sorted by
    series make few), and each local series' key (name and labels joined), name and labels. Found once per row
    group and kept (transforms/io/archive_cache.py): a later query of the group reads no labels at all."""

    keys: list[bytes]
    names: list[str]
    labels: list[dict[str, str]]
    run_starts: np.ndarray  # the first row of each run
    run_series: np.ndarray  # each run's local series
    rows: int

    def ids(self) -> np.ndarray:
        """The local series of every row."""
        return np.repeat(self.run_series, np.diff(np.append(self.run_starts, self.rows)))

    @functools.cached_property
    def by_name(self) -> dict[str, np.ndarray]:
        """The local series of each name (made once per cached group: a query pinning a name then looks only
        at that name's series, not at every series of the group)."""
        positions: dict[str, list[int]] = {}
        for i, name in enumerate(self.names):
            positions.setdefault(name, []).append(i)
        return {name: np.array(found, np.int64) for name, found in positions.items()}

    def rows_named(self, name: str) -> np.ndarray:
        """Per row, whether its series has this name."""
        named = np.zeros(len(self.names), bool)
        named[self.by_name.get(name, _NONE)] = True
        return named[self.ids()]


def group_series(table: pa.Table) -> GroupSeries:
    """The series of rows holding `name` and `labels` (any order)."""
    series_ids, keys = _series_ids(table)
    key_list = keys.to_pylist()
    first_rows = pa.array(_first_row_of_each(series_ids, len(key_list)))
    names = table.column("name").take(first_rows).to_pylist()
    labels = [dict(pairs) for pairs in table.column("labels").take(first_rows).to_pylist()]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(series_ids)) + 1]) if len(series_ids) else \
        np.zeros(0, np.int64)
    return GroupSeries(key_list, names, labels, starts.astype(np.int64), series_ids[starts], len(series_ids))


class SeriesCollector:
    """Gathers a query's matching samples batch by batch, keeping per sample only its series number, time
    and value (24 bytes): labels are kept once per series, so memory follows the samples selected, not the
    rows read or the length of their labels.

    Matchers run once per distinct series: each series' verdict is remembered by its joined key.
    """

    def __init__(self, matchers: Iterable[Matcher]) -> None:
        self.matchers = tuple(matchers)
        self._name = required_name(self.matchers)  # a series of another name cannot match
        self._local: dict[int, tuple[GroupSeries, np.ndarray]] = {}  # by id(group): wants' verdicts, for add_rows
        self._numbers: dict[bytes, int] = {}  # series key -> its number, or -1 when it does not match
        self._labels: list[list[tuple[str, str]]] = []
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.samples = 0
        self.histogram_series: set[int] = set()  # matching series with native histogram rows (not served)

    def add(self, table: pa.Table) -> None:
        """Rows of COLUMNS (any order)."""
        if len(table):
            self.add_rows(group_series(table), table)

    def add_rows(self, series: GroupSeries, table: pa.Table, kept: np.ndarray | None = None) -> None:
        """The rows of `table` (timestamp, value, special and type; `kept` of them, if given) whose series are
        `series`, as group_series found them (perhaps for an earlier request)."""
        if not len(table):
            return
        numbers = self.local_numbers(series)[series.ids()]
        if kept is not None:
            numbers = np.where(kept, numbers, -1)
        histograms = pc.equal(table.column("type"), HISTOGRAM).to_numpy(zero_copy_only=False)
        if histograms.any():
            self.histogram_series.update(np.unique(numbers[histograms & (numbers >= 0)]).tolist())
            numbers = np.where(histograms, -1, numbers)
        rows = np.flatnonzero(numbers >= 0)
        if not len(rows):
            return
        stamps = table.column("timestamp").cast(pa.int64()).to_numpy(zero_copy_only=False)[rows]
        self._parts.append((numbers[rows], stamps, _exact_values(table)[rows]))
        self.samples += len(rows)

    def local_numbers(self, series: GroupSeries) -> np.ndarray:
        """Each local series' number among the matching ones, -1 where it does not match (matchers run once per
        distinct series of the request)."""
        known = self._local.get(id(series))
        if known is not None and known[0] is series:
            return known[1]
        local = np.full(len(series.keys), -1, np.int64)
        candidates = range(len(series.keys)) if self._name is None else \
            series.by_name.get(self._name, _NONE).tolist()
        for i in candidates:
            key = series.keys[i]
            number = self._numbers.get(key)
            if number is None:
                number = -1
                if series_matches(self.matchers, series.names[i], series.labels[i]):
                    number = len(self._labels)
                    self._labels.append(sorted([(METRIC_NAME_LABEL, series.names[i]), *series.labels[i].items()]))
                self._numbers[key] = number
            local[i] = number
        self._local[id(series)] = (series, local)  # the group is held, so its id is not reused meanwhile
        return local

    def wants(self, series: GroupSeries) -> bool:
        """Whether any series of a row group matches: a group whose series are known and match none is not read."""
        return bool((self.local_numbers(series) >= 0).any())

    def histogram_example(self) -> str:
        """One matching series that holds native histograms, as name{labels}, for the refusal's message."""
        labels = dict(self._labels[min(self.histogram_series)])
        name = labels.pop(METRIC_NAME_LABEL, "")
        return name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"

    def series(self) -> list[Series]:
        """The matching series, sorted by labels, each sorted by time; a sample archived twice (the same series
        and timestamp in two files) is returned once, as Prometheus needs strictly increasing timestamps."""
        if not self._parts:
            return []
        ids, stamps, values = (np.concatenate(column) for column in zip(*self._parts, strict=True))
        self._parts = []
        # rows come from files and row groups in time order, so each series' samples usually are already; a
        # stable sort on the series alone then suffices (checked), else the sort on both keys
        order = np.argsort(ids, kind="stable")
        sorted_ids, sorted_stamps = ids[order], stamps[order]
        if ((sorted_ids[1:] != sorted_ids[:-1]) | (sorted_stamps[1:] >= sorted_stamps[:-1])).all():
            ids, stamps, values = sorted_ids, sorted_stamps, values[order]
        else:
            order = np.lexsort((stamps, ids))
            ids, stamps, values = ids[order], stamps[order], values[order]
        keep = np.ones(len(ids), bool)
        keep[1:] = (ids[1:] != ids[:-1]) | (stamps[1:] != stamps[:-1])
        ids, stamps, values = ids[keep], stamps[keep], values[keep]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        ends = np.append(starts[1:], len(ids)).tolist()
        # plain slices: np.split costs several us per piece, which adds up over thousands of series
        out = [Series(self._labels[number], stamps[start:end], values[start:end])
               for number, start, end in zip(ids[starts].tolist(), starts.tolist(), ends, strict=True)]
        out.sort(key=lambda one: one.labels)
        return out


def select_series(table: pa.Table, matchers: Iterable[Matcher]) -> list[Series]:
    """The matching series of some rows (any order, any number of files), as SeriesCollector returns them."""
    collector = SeriesCollector(matchers)
    collector.add(table)
    return collector.series()


def _series_ids(table: pa.Table) -> tuple[np.ndarray, pa.Array]:
    """A number per row naming its series (name + labels), computed in C by dictionary-encoding a joined key.

    The parts are joined as bytes with 0xFD, 0xFE and 0xFF, which never occur in UTF-8, so the key is
    injective without escaping anything.
    """
    labels = table.column("labels").combine_chunks()
    pairs = pc.binary_join_element_wise(labels.keys.cast(pa.binary()), labels.items.cast(pa.binary()), b"\xfd")
    joined_pairs = pc.binary_join(pa.ListArray.from_arrays(labels.offsets, pairs), b"\xff")
    name = table.column("name").combine_chunks().cast(pa.binary())
    joined = pc.binary_join_element_wise(name, joined_pairs, b"\xfe")
    encoded = pc.dictionary_encode(joined)
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def _first_row_of_each(series_ids: np.ndarray, count: int) -> np.ndarray:
    first = np.full(count, len(series_ids), np.int64)
    np.minimum.at(first, series_ids, np.arange(len(series_ids), dtype=np.int64))
    return first
