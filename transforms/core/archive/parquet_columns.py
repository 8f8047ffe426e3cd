"""Parquet blocks straight from a columnar batch: Arrow arrays from the numpy columns and the series table.

The pipeline's float path (requests without histograms or exemplars). Per series, its name, labels and
sort key become Arrow arrays once, when its slot is new to the series table; per request, a partition's
block takes them by the sample -> series index, and timestamps, values, special-value names, kinds and
start timestamps are numpy columns handed to Arrow. No Python object is made per sample, and only new
series cost Python work. The rows are exactly those the NDJSON lines of the same batch hold (parquet.py's
records_block of those lines is the oracle, tests/unit/test_parquet_columns.py).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from transforms.core.archive import parquet
from transforms.core.archive.lines import KIND_PREFIXES, BatchLines, PackedBlock, hour_partition
from transforms.core.archive.metric_to_log import ConversionError, Partition
from transforms.core.metadata import MetadataStore
from transforms.core.protocol import METRIC_NAME_LABEL, PROMETHEUS_NAN_BITS, STALE_NAN_BITS, Protocol
from transforms.core.wire.batch import Batch

# The range of Python's datetime (0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z), as the compiled line
# formatter checks it: a sample outside it cannot be an NDJSON line, so it cannot be a Parquet row either.
MIN_SECOND = -62_135_596_800
MAX_SECOND = 253_402_300_799
_MS_PER_HOUR = 3_600_000
_KIND_NAMES = ("counter", "gauge")
_KIND_CODES = {prefix: _KIND_NAMES.index(kind) for prefix, kind in KIND_PREFIXES.items()}
_SPECIAL_NAMES = ("StaleNaN", "NaN")  # codes 0 and 1; any other NaN payload is named by its bits


class SeriesArrays:
    """Per slot of one series table's containers, the series' key (parquet.series_key: its name and its
    labels as the archive holds them, every label but __name__, sorted) in Arrow arrays.

    Slots are appended in runs, one per request that brought new series; a run as long as the one before
    it is merged into it (like a binary counter), so there are O(log slots) runs to take from and each
    slot is copied O(log slots) times in all.
    """

    def __init__(self, names: list[str]) -> None:
        self.names = names  # the series table's container these slots index
        self.starts: list[int] = []
        self.runs: list[pa.Array] = []
        self.size = 0

    def extend(self, labels: list[tuple[tuple[str, str], ...]]) -> None:
        """Keys for the slots the table holds beyond those already made."""
        end = len(self.names)
        if end <= self.size:
            return
        keys = [parquet.series_key(self.names[slot], sorted(pair for pair in labels[slot]
                                                            if pair[0] != METRIC_NAME_LABEL))
                for slot in range(self.size, end)]
        self.starts.append(self.size)
        self.runs.append(pa.array(keys, pa.binary()))
        self.size = end
        while len(self.runs) > 1 and len(self.runs[-1]) >= len(self.runs[-2]):
            last, before = self.runs.pop(), self.runs.pop()
            self.starts.pop()
            self.runs.append(pa.concat_arrays([before, last]))

    def take(self, slots: np.ndarray) -> pa.RecordBatch:
        """The series batch of sorted, distinct slots."""
        bounds = np.searchsorted(slots, [*self.starts[1:], self.size])
        parts, first = [], 0
        for start, run, end in zip(self.starts, self.runs, bounds.tolist(), strict=True):
            if end > first:
                parts.append(run.take(pa.array(slots[first:end] - start)))
            first = end
        return parquet.series_batch(parts[0] if len(parts) == 1 else pa.concat_arrays(parts))


class ParquetBlocks(BatchLines):
    """BatchLines (series tables, kinds, metadata) plus, per tenant, the series' Arrow arrays: owned by
    whoever converts (a DoFn's setup), like BatchLines."""

    def __init__(self, store: MetadataStore, series_limit: int = 500_000, compress_blocks: bool = True) -> None:
        super().__init__(store, series_limit)
        self.compress_blocks = compress_blocks
        self._arrays: dict[str, SeriesArrays] = {}
        self._codes: dict[str, tuple[list[bytes], np.ndarray]] = {}  # per tenant

    def _kind_codes(self, tenant: str, kinds: list[bytes]) -> np.ndarray:
        """0 (counter) or 1 (gauge) per kind prefix; a tenant's 1.0 per-slot list only grows until its
        metadata changes, so its codes are extended, not remade."""
        cached, codes = self._codes.get(tenant, (None, np.zeros(0, np.int8)))
        if cached is not kinds or len(codes) > len(kinds):
            codes = np.zeros(0, np.int8)
        if len(codes) < len(kinds):
            codes = np.concatenate([codes, np.fromiter((_KIND_CODES[k] for k in kinds[len(codes):]), np.int8)])
        self._codes[tenant] = (kinds, codes)
        return codes

    def _series_arrays(self, batch: Batch, tenant: str) -> SeriesArrays:
        arrays = self._arrays.get(tenant)
        if arrays is None or arrays.names is not batch.names:  # a new or renewed series table
            arrays = self._arrays[tenant] = SeriesArrays(batch.names)
        arrays.extend(batch.labels)
        return arrays

    def blocks(self, batch: Batch, tenant: str) -> dict[Partition, PackedBlock]:
        """A float-only batch's Parquet blocks by partition (the hour of each sample's own timestamp);
        raises ConversionError for a timestamp the NDJSON lines could not hold either."""
        kinds, kind_index = self.series_kinds(batch, tenant)
        series_kind = self._kind_codes(tenant, kinds)[np.frombuffer(kind_index, np.int32)]
        slots = np.frombuffer(batch.series_slot, np.int32)
        sample_series = np.frombuffer(batch.sample_series, np.uint32)
        stamps = np.frombuffer(batch.timestamps, np.int64)
        values = np.frombuffer(batch.values, np.float64)
        starts = None
        if batch.protocol is Protocol.V2 and batch.starts is not None:
            # a sample's own start timestamp, else its series' created timestamp; 0 means none
            starts = np.frombuffer(batch.starts, np.int64)
            if batch.created is not None:
                starts = np.where(starts != 0, starts, np.frombuffer(batch.created, np.int64)[sample_series])
        _check_range(stamps, starts)
        arrays = self._series_arrays(batch, tenant)
        hours = np.floor_divide(stamps, _MS_PER_HOUR)
        distinct, first_seen = np.unique(hours, return_index=True)
        out: dict[Partition, PackedBlock] = {}
        for hour in distinct[np.argsort(first_seen)].tolist():
            rows = np.flatnonzero(hours == hour) if len(distinct) > 1 else np.arange(len(hours))
            series_of_row = sample_series[rows]
            block_slots, local = np.unique(slots[series_of_row], return_inverse=True)
            data = parquet.pack_block(arrays.take(block_slots), _rows(
                local.astype(np.int32), stamps[rows], values[rows], series_kind[series_of_row],
                None if starts is None else starts[rows]), compress=self.compress_blocks)
            out[hour_partition(tenant, hour)] = PackedBlock(data, len(rows))
        return out


def _check_range(stamps: np.ndarray, starts: np.ndarray | None) -> None:
    """The compiled formatter's check, with its message: the first sample whose start (checked first) or
    own timestamp lies outside datetime's range."""
    def outside(ms: np.ndarray) -> np.ndarray:
        seconds = np.floor_divide(ms, 1000)
        return (seconds < MIN_SECOND) | (seconds > MAX_SECOND)

    bad_stamp = outside(stamps)
    bad_start = np.zeros(len(stamps), bool) if starts is None else (starts != 0) & outside(starts)
    bad = bad_stamp | bad_start
    if bad.any():
        first = int(np.argmax(bad))
        ms = int(starts[first]) if bad_start[first] else int(stamps[first])
        raise ConversionError(f"timestamp {ms // 1000}000 ms is outside the representable range")


def _rows(series: np.ndarray, stamps: np.ndarray, values: np.ndarray, kinds: np.ndarray,
          starts: np.ndarray | None) -> pa.RecordBatch:
    n = len(series)
    nan = np.isnan(values)
    if nan.any():  # NULL value and a named special value: StaleNaN, NaN, or NaN:0x<bits>
        bits = values.view(np.uint64)
        codes = np.where(bits == STALE_NAN_BITS, 0, np.where(bits == PROMETHEUS_NAN_BITS, 1, -1)).astype(np.int32)
        odd = nan & (codes < 0)
        names = list(_SPECIAL_NAMES)
        if odd.any():
            distinct, codes[odd] = np.unique(bits[odd], return_inverse=True)
            codes[odd] += len(names)
            names += [f"NaN:0x{int(b):016x}" for b in distinct]
        specials = pa.DictionaryArray.from_arrays(pa.array(codes, mask=~nan), pa.array(names, pa.string()))
        specials = specials.dictionary_decode()
    else:
        specials = pa.nulls(n, pa.string())
    types = pa.DictionaryArray.from_arrays(pa.array(kinds), pa.array(_KIND_NAMES)).dictionary_decode()
    start_column = pa.nulls(n, pa.int64()) if starts is None else pa.array(starts, mask=starts == 0)
    return parquet.rows_batch(pa.array(series), pa.array(stamps), pa.array(values, mask=nan), specials, types,
                              start_column)
