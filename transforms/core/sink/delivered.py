"""What a sink already holds from us: per series, the timestamps it accepted (2xx), newest first kept.

Pub/Sub redelivers (an ack deadline that expired during a sink stall, a killed pipeline, a nack), so a
series' older request can come back after a newer one was delivered. A strict sink (Prometheus without
`out_of_order_time_window`, Mimir by default) refuses it as "out of order" or "duplicate sample", and
without this record the forwarder could not tell a harmless redelivery from a sample that was never
written, which is a real loss.

`DeliveredLog` keeps, per (tenant, series label bytes), the exact timestamps delivered, the newest
`per_series` of them, for at most `max_series` series (least recently delivered forgotten first). A
sample whose timestamp is in its series' set is "already delivered": the forwarder drops it before
sending. A sample older than the newest delivered one and not in the set was never delivered by this
forwarder: it is sent, and if the sink refuses it, dead-lettered. A sample older than everything
remembered for its series (or of a series forgotten) cannot be told apart, and is treated as never
delivered: the error is a dead letter that replays harmlessly, never a silent loss.

Exact timestamps, not only the newest one: a newest-timestamp mark alone would also swallow a
never-delivered older sample (Dataflow's parallel bundles, or a message that came back after a newer
one was sent) as "already delivered". Pure: the state crosses restarts as bytes (`to_bytes`,
`from_bytes`); transforms/io/delivered_state.py writes them to a file.
"""

from __future__ import annotations

import itertools
import operator
import re
import struct
import threading
from collections.abc import Callable

import numpy as np

DEFAULT_MAX_SERIES = 50_000  # with per_series 64: at most ~26 MB per sink
DEFAULT_PER_SERIES = 64  # at a 15 s scrape interval: 16 minutes of redelivery horizon per series
MAGIC = b"PRWDELIVERED1\n"
EMPTY = np.iinfo(np.int64).min  # an unused slot of a series' ring (no real timestamp is this)
_ENTRY = struct.Struct("<HII")  # tenant length, label-bytes length, timestamp count
# How Prometheus, Mimir/Cortex and Thanos word a sample refused for its order or time (never a format error).
ORDER_REFUSAL = re.compile(r"out[ -]of[ -]order|duplicate[ -]sample|duplicate-timestamp|too[ -]old|out of bounds",
                           re.IGNORECASE)

Key = tuple[str, bytes]  # (tenant, the series' 1.0 label bytes)


def refused_for_order(answer: str) -> bool:
    """Whether a sink's 4xx answer refuses samples for their order or age, rather than their content."""
    return bool(ORDER_REFUSAL.search(answer))


def series_runs(series: np.ndarray) -> list[tuple[int, int]]:
    """[lo, hi) ranges of equal consecutive series ids (a request's columns hold each series in one run)."""
    if not len(series):
        return []
    cuts = np.flatnonzero(np.diff(series.astype(np.int64))) + 1
    bounds = [0, *cuts.tolist(), len(series)]
    return list(zip(bounds, bounds[1:], strict=False))


class DeliveredLog:
    """One sink's delivered timestamps per series, bounded in memory; thread-safe (shards run in threads).

    Columnar, so that checking and recording a 1000-sample request costs numpy passes, not Python per sample:
    a row per series in `_stamps` (a ring of its last `per_series` delivered timestamps), its newest in
    `_newest`, and when it was last delivered to in `_used` (the least recently used rows are reused first).
    Each call's `series` must hold each series in one run, as a request's ordered columns do.
    """

    def __init__(self, max_series: int = DEFAULT_MAX_SERIES, per_series: int = DEFAULT_PER_SERIES,
                 journal: Callable[[bytes], None] | None = None) -> None:
        if max_series < 1 or per_series < 1:
            raise ValueError("max_series and per_series must be >= 1")
        self.max_series = max_series
        self.per_series = per_series
        self._rows: dict[str, dict[bytes, int]] = {}  # tenant -> series label bytes -> row
        self._keys: list[Key | None] = []
        self._free: list[int] = []
        self._stamps = np.full((0, per_series), EMPTY, np.int64)
        self._newest = np.zeros(0, np.int64)
        self._next = np.zeros(0, np.int64)  # where each row's ring writes next
        self._used = np.zeros(0, np.int64)
        self._tick = 0
        self._lock = threading.Lock()
        self.changes = 0  # deliveries recorded since the last to_bytes(): whether saving is worth it
        # Told each delivery as saved-log entries the moment it is recorded (transforms/io/delivered_state.py
        # appends them to a file), so a process killed right after a 2xx still remembers it.
        self.journal = journal
        # Told each request's samples before it is sent (the io layer appends them to a file), and, after a
        # restart, what the previous run sent without living to see the answer: a strict sink that refuses
        # those for their order holds them (requests of a series go one at a time, in time order).
        self.sending: Callable[[bytes], None] | None = None
        self.unconfirmed: DeliveredLog | None = None

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._rows.values())

    def timestamps(self, tenant: str, key: bytes) -> np.ndarray:
        """The delivered timestamps remembered for a series, ascending (empty if none)."""
        with self._lock:
            row = self._rows.get(tenant, {}).get(key)
            if row is None:
                return np.zeros(0, np.int64)
            found = self._stamps[row]
            return np.sort(found[found != EMPTY])

    def newest(self, tenant: str, key: bytes) -> int | None:
        with self._lock:
            row = self._rows.get(tenant, {}).get(key)
            return None if row is None else int(self._newest[row])

    def already_delivered(self, tenant: str, keys: list[bytes], series: np.ndarray,
                          timestamps: np.ndarray) -> np.ndarray:
        """A mask over the samples: True where the sample's timestamp was delivered for its series."""
        with self._lock:
            return self._known(self._sample_rows(tenant, keys, series, create=False), timestamps)

    def record(self, tenant: str, keys: list[bytes], series: np.ndarray, timestamps: np.ndarray) -> None:
        """The sink accepted these samples (2xx): remember their timestamps, newest per_series per series."""
        if not len(series):
            return
        timestamps = np.asarray(timestamps, np.int64)
        with self._lock:
            if self.journal is not None:
                self.journal(_entries(tenant, keys, series, timestamps))
            rows = self._sample_rows(tenant, keys, series, create=True)
            fresh = ~self._known(rows, timestamps)
            fresh[1:] &= (rows[1:] != rows[:-1]) | (timestamps[1:] != timestamps[:-1])  # a repeat in the request
            rows, stamps = rows[fresh], timestamps[fresh]
            if len(rows):
                starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
                counts = np.diff(np.r_[starts, len(rows)])
                rank = np.arange(len(rows)) - np.repeat(starts, counts)
                skip = np.repeat(np.maximum(counts - self.per_series, 0), counts)  # only the last per_series fit
                kept = rank >= skip
                rows, stamps, rank = rows[kept], stamps[kept], (rank - skip)[kept]
                first = rows[np.r_[True, rows[1:] != rows[:-1]]]
                self._stamps[rows, (self._next[rows] + rank) % self.per_series] = stamps
                self._next[first] = (self._next[first] + np.minimum(counts, self.per_series)) % self.per_series
                np.maximum.at(self._newest, rows, stamps)
            self.changes += 1

    def about_to_send(self, tenant: str, keys: list[bytes], series: np.ndarray, timestamps: np.ndarray) -> None:
        if self.sending is not None and len(series):
            self.sending(_entries(tenant, keys, series, np.asarray(timestamps, np.int64)))

    def sent_unconfirmed(self, tenant: str, keys: list[bytes], series: np.ndarray, timestamps: np.ndarray
                         ) -> np.ndarray:
        """A mask: True where a previous run sent the sample and died before the sink's answer."""
        if self.unconfirmed is None:
            return np.zeros(len(series), bool)
        return self.unconfirmed.already_delivered(tenant, keys, series, timestamps)

    def horizon(self, tenant: str, key: bytes) -> int | None:
        """The oldest timestamp remembered for a series once its ring is full (older ones were forgotten), in
        what was delivered or what a previous run sent unconfirmed, whichever reaches less far back."""
        found = self.timestamps(tenant, key)
        mine = int(found[0]) if len(found) >= self.per_series else None
        theirs = self.unconfirmed.horizon(tenant, key) if self.unconfirmed is not None else None
        known = [t for t in (mine, theirs) if t is not None]
        return max(known) if known else None

    def newest_sent(self, tenant: str, key: bytes) -> int | None:
        """The newest timestamp delivered, or sent by a previous run that never saw the answer."""
        found = [t for t in (self.newest(tenant, key),
                             self.unconfirmed.newest(tenant, key) if self.unconfirmed is not None else None)
                 if t is not None]
        return max(found) if found else None

    def record_series(self, tenant: str, key: bytes, timestamps: list[int]) -> None:
        """One protobuf series' delivered timestamps (the path for histograms and exemplars)."""
        if timestamps:
            self.record(tenant, [key], np.zeros(len(timestamps), np.uint32), np.sort(np.asarray(timestamps, np.int64)))

    def _known(self, rows: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
        mask = np.zeros(len(rows), bool)
        seen = rows >= 0
        if seen.any():
            mask[seen] = (self._stamps[rows[seen]] == timestamps[seen, None]).any(axis=1)
        return mask

    def _sample_rows(self, tenant: str, keys: list[bytes], series: np.ndarray, create: bool) -> np.ndarray:
        """Each sample's row (-1: a series not remembered); with `create`, rows are made for new series."""
        if not len(series):
            return np.zeros(0, np.int64)
        starts = np.flatnonzero(np.r_[True, series[1:] != series[:-1]])
        ids = series[starts].tolist()
        run_keys = [keys[ids[0]]] if len(ids) == 1 else list(operator.itemgetter(*ids)(keys))
        rows = self._rows.setdefault(tenant, {})
        # map() over dict.get: one C loop per request, not Python bytecode per series
        run_rows = np.array(list(map(rows.get, run_keys, itertools.repeat(-1, len(run_keys)))), np.int64)
        if create:
            for i in np.flatnonzero(run_rows < 0).tolist():
                run_rows[i] = self._new_row(tenant, run_keys[i])
            self._tick += 1
            self._used[run_rows] = self._tick
        return np.repeat(run_rows, np.diff(np.r_[starts, len(series)]))

    def _new_row(self, tenant: str, key: bytes) -> int:
        if not self._free:
            if len(self._keys) < self.max_series:
                self._grow(min(self.max_series, max(1024, 2 * len(self._keys))))
            else:
                self._evict(max(1, self.max_series // 8))
        row = self._free.pop()
        self._rows[tenant][key] = row
        self._keys[row] = (tenant, key)
        return row

    def _grow(self, capacity: int) -> None:
        extra = capacity - len(self._keys)
        self._stamps = np.vstack([self._stamps, np.full((extra, self.per_series), EMPTY, np.int64)])
        self._newest = np.r_[self._newest, np.full(extra, EMPTY, np.int64)]
        self._next = np.r_[self._next, np.zeros(extra, np.int64)]
        self._used = np.r_[self._used, np.zeros(extra, np.int64)]
        self._free += range(capacity - 1, len(self._keys) - 1, -1)
        self._keys += [None] * extra

    def _evict(self, count: int) -> None:
        """Forget the `count` least recently delivered series (never one being recorded now: it is newest)."""
        oldest = np.argpartition(self._used, count - 1)[:count]
        for row in oldest.tolist():
            key = self._keys[row]
            if key is not None:
                del self._rows[key[0]][key[1]]
                self._keys[row] = None
                self._free.append(row)
        self._stamps[oldest] = EMPTY
        self._newest[oldest] = EMPTY
        self._next[oldest] = 0
        self._used[oldest] = 0

    def to_bytes(self) -> bytes:
        """The whole log, least recently delivered series first (loading keeps the same eviction order)."""
        with self._lock:
            rows = sorted((row, tenant, key) for tenant, known in self._rows.items() for key, row in known.items())
            rows.sort(key=lambda item: int(self._used[item[0]]))
            parts = [MAGIC]
            for row, tenant, key in rows:
                stamps = self._stamps[row]
                stamps = np.sort(stamps[stamps != EMPTY])
                encoded = tenant.encode()
                parts += [_ENTRY.pack(len(encoded), len(key), len(stamps)), encoded, key,
                          stamps.astype("<i8").tobytes()]
            self.changes = 0
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, max_series: int = DEFAULT_MAX_SERIES, per_series: int = DEFAULT_PER_SERIES,
                   journal: bytes = b"") -> tuple[DeliveredLog, str | None]:
        """A log saved by to_bytes (b"" for none), then the entries appended after it (`journal`).

        ValueError (saying where) if `data` is not a saved log. A journal cut short (the process died while
        appending) is read up to its last whole entry; the second value then says what was left out.
        """
        log = cls(max_series, per_series)
        if data:
            if not data.startswith(MAGIC):
                raise ValueError("not a delivered-timestamps file (bad header)")
            log._apply(data, len(MAGIC), strict=True)
        torn = log._apply(journal, 0, strict=False)
        log.changes = 0
        return log, torn

    def _apply(self, data: bytes, at: int, strict: bool) -> str | None:
        while at < len(data):
            problem = None
            if at + _ENTRY.size > len(data):
                problem = f"truncated entry header at byte {at}"
            else:
                tenant_len, key_len, count = _ENTRY.unpack_from(data, at)
                end = at + _ENTRY.size + tenant_len + key_len + 8 * count
                if end > len(data):
                    problem = f"truncated entry at byte {at}: needs {end - at} bytes, {len(data) - at} left"
            if problem:
                if strict:
                    raise ValueError(problem)
                return problem
            at += _ENTRY.size
            try:
                tenant = data[at:at + tenant_len].decode()
            except UnicodeDecodeError as exc:
                raise ValueError(f"bad tenant at byte {at}: {exc}") from None
            key = data[at + tenant_len:at + tenant_len + key_len]
            stamps = np.unique(np.frombuffer(data, "<i8", count, at + tenant_len + key_len))
            self.record(tenant, [key], np.zeros(len(stamps), np.uint32), stamps)
            at = end
        return None


def _entries(tenant: str, keys: list[bytes], series: np.ndarray, timestamps: np.ndarray) -> bytes:
    """Samples as saved-log entries: one per series run (its tenant, label bytes and timestamps)."""
    encoded = tenant.encode()
    starts = np.flatnonzero(np.r_[True, series[1:] != series[:-1]]) if len(series) else np.zeros(0, np.int64)
    bounds = np.r_[starts, len(series)].tolist()
    stamps = timestamps.astype("<i8")
    parts = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        key = keys[int(series[lo])]
        parts += [_ENTRY.pack(len(encoded), len(key), hi - lo), encoded, key, stamps[lo:hi].tobytes()]
    return b"".join(parts)
