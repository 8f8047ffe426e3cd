"""What a strict sink already holds from us: per series, the exact timestamps it accepted (2xx).

Pub/Sub redelivers (an ack deadline that expired during a sink stall, a killed pipeline, a nack), so a
series' older request can come back after a newer one was delivered. A strict sink (Prometheus without
`out_of_order_time_window`, Mimir by default) refuses it as "out of order" or "duplicate sample", and
without this record the sink driver could not tell a harmless redelivery from a sample that was never
written, which is a real loss. Only sinks configured `order: strict` (or that refused a sample for its
order) keep one: transforms/core/sink/order.py is the driver's side.

`DeliveredLog` keeps, per (tenant, series label bytes), the exact timestamps delivered, up to
`max_samples` timestamps for the whole sink (the oldest timestamps forgotten first) and `max_series`
series (the least recently delivered forgotten first). A per-sink budget, not a fixed count per series:
after an outage the backlog reaches the sink in requests of hundreds of samples per series, and all of
them must be remembered for their redelivered copies to be recognised.

Exact timestamps, not only the newest one: a newest-timestamp mark alone would also swallow a
never-delivered older sample (Dataflow's parallel bundles, or a message that came back after a newer
one was sent) as "already delivered". What is not known is said: each series has a floor (the oldest
timestamp of its first remembered delivery, raised when old timestamps are forgotten), below which a
sample cannot be told apart and counts as maybe delivered.

Pure: the state crosses restarts as bytes (`to_bytes`, `from_bytes`); transforms/io/delivered_state.py
writes them to files.
"""

from __future__ import annotations

import itertools
import operator
import re
import struct
import threading
from collections.abc import Callable

import numpy as np

DEFAULT_MAX_SAMPLES = 4_000_000  # timestamps per sink: 32 MB of keys
DEFAULT_MAX_SERIES = 200_000
TS_BITS = 42  # a key is row << 42 | timestamp: timestamps from 1970 to 2109 (ms) can be remembered
TS_LIMIT = 1 << TS_BITS
MAX_ROWS = 1 << (63 - TS_BITS)  # 2 M series per sink at most
NONE = np.iinfo(np.int64).min  # no newest / floor yet
MAGIC = b"PRWDELIVERED2\n"
# One entry: tenant length, series count, sample count, label-bytes total; then the tenant, per series its
# label-bytes length, floor, newest and sample count, the label bytes, and the timestamps.
_ENTRY = struct.Struct("<HIII")
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


def _run_starts(series: np.ndarray) -> np.ndarray:
    change = np.empty(len(series), bool)
    change[:1] = True
    np.not_equal(series[1:], series[:-1], out=change[1:])
    return np.flatnonzero(change)


def _sorted_unique(keys: np.ndarray, presorted: bool = False) -> np.ndarray:
    """np.unique without its hashing pass (slower than a sort for a request's thousand keys)."""
    if not presorted:
        keys = np.sort(keys)
    if len(keys) < 2:
        return keys
    fresh = np.empty(len(keys), bool)
    fresh[0] = True
    np.not_equal(keys[1:], keys[:-1], out=fresh[1:])
    return keys[fresh]


def _counts(starts: np.ndarray, total: int) -> np.ndarray:
    counts = np.empty(len(starts), np.int64)
    counts[:-1] = starts[1:] - starts[:-1]
    counts[-1:] = total - starts[-1:]
    return counts


class KeySet:
    """A set of int64 keys as sorted arrays in tiers (a small LSM tree): a request's keys are one array;
    FANOUT arrays of a tier merge into one of the next. Adding is amortised O(log n / log FANOUT) numpy
    work per key, looking up one searchsorted per array; no Python per key."""

    FANOUT = 8

    def __init__(self) -> None:
        self.tiers: list[list[np.ndarray]] = []
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, keys: np.ndarray) -> None:
        """Sorted, unique keys."""
        if not len(keys):
            return
        self.size += len(keys)
        carry, tier = keys, 0
        while True:
            if tier == len(self.tiers):
                self.tiers.append([])
            self.tiers[tier].append(carry)
            if len(self.tiers[tier]) < self.FANOUT:
                return
            carry = self._merged(self.tiers[tier])
            self.tiers[tier] = []
            tier += 1

    def _merged(self, arrays: list[np.ndarray]) -> np.ndarray:
        before = sum(len(a) for a in arrays)
        merged = np.concatenate(arrays)
        merged.sort(kind="stable")  # timsort: sorted runs merge in about linear time
        merged = _sorted_unique(merged, presorted=True)
        self.size -= before - len(merged)  # a key recorded twice (a repeated delivery) counts once
        return merged

    def contains(self, keys: np.ndarray) -> np.ndarray:
        found = np.zeros(len(keys), bool)
        for arrays in self.tiers:
            for level in arrays:
                at = np.minimum(np.searchsorted(level, keys), len(level) - 1)
                found |= level[at] == keys
        return found

    def whole(self) -> np.ndarray:
        """Every key, sorted (a copy when the tiers hold several arrays; they stay as they are)."""
        arrays = [a for arrays in self.tiers for a in arrays]
        if not arrays:
            return np.zeros(0, np.int64)
        if len(arrays) == 1:
            return arrays[0]
        size = self.size
        merged = self._merged(arrays)
        self.size = size
        return merged

    def replace(self, keys: np.ndarray) -> None:
        """Hold exactly these (sorted, unique) keys, as one array in the top tier: later adds merge into it
        only as often as before, not once every FANOUT requests."""
        self.tiers = [[] for _ in range(max(1, len(self.tiers) - 1))] + [[keys]] if len(keys) else []
        self.size = len(keys)


class DeliveredLog:
    """One sink's delivered timestamps per series, bounded in memory; thread-safe (shards run in threads).

    Each call's `series` must hold each series in one run, as a request's ordered columns do.
    """

    def __init__(self, max_samples: int = DEFAULT_MAX_SAMPLES, max_series: int = DEFAULT_MAX_SERIES,
                 journal: Callable[[bytes], None] | None = None) -> None:
        if max_samples < 1 or not 1 <= max_series <= MAX_ROWS:
            raise ValueError(f"max_samples must be >= 1 and max_series in 1..{MAX_ROWS}")
        self.max_samples = max_samples
        self.max_series = max_series
        self._rows: dict[str, dict[bytes, int]] = {}  # tenant -> series label bytes -> row
        self._keys: list[Key | None] = []
        self._free: list[int] = []
        self._newest = np.zeros(0, np.int64)  # per row: the newest timestamp delivered
        self._floor = np.zeros(0, np.int64)  # per row: the oldest timestamp of its first remembered delivery
        self._used = np.zeros(0, np.int64)  # per row: when it was last delivered to (least recent evicted first)
        self._tick = 0
        self._stamps = KeySet()  # row << TS_BITS | timestamp, for every remembered delivery
        self.forgotten_below = NONE  # timestamps below this were forgotten to stay within max_samples
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

    @property
    def samples(self) -> int:
        return len(self._stamps)

    def _row(self, tenant: str, key: bytes) -> int | None:
        return self._rows.get(tenant, {}).get(key)

    def timestamps(self, tenant: str, key: bytes) -> np.ndarray:
        """The delivered timestamps remembered for a series, ascending (empty if none)."""
        with self._lock:
            row = self._row(tenant, key)
            if row is None:
                return np.zeros(0, np.int64)
            keys = self._stamps.whole()
            lo, hi = np.searchsorted(keys, [row << TS_BITS, (row + 1) << TS_BITS])
            return keys[lo:hi] & (TS_LIMIT - 1)

    def newest(self, tenant: str, key: bytes) -> int | None:
        with self._lock:
            row = self._row(tenant, key)
            return None if row is None else int(self._newest[row])

    def floor(self, tenant: str, key: bytes) -> int | None:
        """Below this timestamp, whether a sample of the series was delivered is not known (None: a series
        not remembered at all). Above it, every delivered timestamp is remembered."""
        with self._lock:
            row = self._row(tenant, key)
            return None if row is None else max(int(self._floor[row]), self.forgotten_below)

    def already_delivered(self, tenant: str, keys: list[bytes], series: np.ndarray,
                          timestamps: np.ndarray) -> np.ndarray:
        """A mask over the samples: True where the sample's timestamp was delivered for its series.

        Only samples at or below their series' newest delivered timestamp are looked up: fresh data, the
        common case, costs one comparison per sample.
        """
        timestamps = np.asarray(timestamps, np.int64)
        mask = np.zeros(len(series), bool)
        if not len(series):
            return mask
        with self._lock:
            starts, run_rows = self._run_rows(tenant, keys, series)
            rows = np.repeat(run_rows, _counts(starts, len(series)))
            known = rows >= 0
            maybe = known.copy()
            maybe[known] = timestamps[known] <= self._newest[rows[known]]
            maybe &= (timestamps >= 0) & (timestamps < TS_LIMIT)
            if maybe.any():
                mask[maybe] = self._stamps.contains((rows[maybe] << TS_BITS) | timestamps[maybe])
        return mask

    def record(self, tenant: str, keys: list[bytes], series: np.ndarray, timestamps: np.ndarray) -> None:
        """The sink accepted these samples (2xx): remember their timestamps."""
        if not len(series):
            return
        timestamps = np.asarray(timestamps, np.int64)
        starts = _run_starts(series)
        counts = _counts(starts, len(series))
        run_keys = _keys_of(keys, series[starts])
        floors, newest = np.minimum.reduceat(timestamps, starts), np.maximum.reduceat(timestamps, starts)
        with self._lock:
            if self.journal is not None:
                self.journal(_entry(tenant, run_keys, floors, newest, counts, timestamps))
            self._record_runs(tenant, run_keys, floors, newest, counts, timestamps)

    def _record_runs(self, tenant: str, run_keys: list[bytes], floors: np.ndarray, newest: np.ndarray,
                     counts: np.ndarray, timestamps: np.ndarray) -> None:
        run_rows, made = self._rows_for(tenant, run_keys)
        self._floor[run_rows[made]] = floors[made]
        np.maximum.at(self._newest, run_rows, newest)
        rows = np.repeat(run_rows, counts)
        fits = (timestamps >= 0) & (timestamps < TS_LIMIT)
        self._stamps.add(_sorted_unique((rows[fits] << TS_BITS) | timestamps[fits]))
        self.changes += 1
        if len(self._stamps) > self.max_samples:
            self._forget_oldest()

    def about_to_send(self, tenant: str, keys: list[bytes], series: np.ndarray, timestamps: np.ndarray) -> None:
        if self.sending is None or not len(series):
            return
        timestamps = np.asarray(timestamps, np.int64)
        starts = _run_starts(series)
        self.sending(_entry(tenant, _keys_of(keys, series[starts]), np.minimum.reduceat(timestamps, starts),
                            np.maximum.reduceat(timestamps, starts), _counts(starts, len(series)),
                            timestamps))

    def sent_unconfirmed(self, tenant: str, keys: list[bytes], series: np.ndarray, timestamps: np.ndarray
                         ) -> np.ndarray:
        """A mask: True where a previous run sent the sample and died before the sink's answer."""
        if self.unconfirmed is None:
            return np.zeros(len(series), bool)
        return self.unconfirmed.already_delivered(tenant, keys, series, timestamps)

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

    def _run_rows(self, tenant: str, keys: list[bytes], series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each series run starts, and its row (-1: a series not remembered)."""
        starts = _run_starts(series)
        run_keys = _keys_of(keys, series[starts])
        rows = self._rows.get(tenant, {})
        # map() over dict.get: one C loop per request, not Python bytecode per series
        return starts, np.array(list(map(rows.get, run_keys, itertools.repeat(-1, len(run_keys)))), np.int64)

    def _rows_for(self, tenant: str, run_keys: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Each series' row, made for series not remembered yet (second value: which ones were made)."""
        rows = self._rows.setdefault(tenant, {})
        run_rows = np.array(list(map(rows.get, run_keys, itertools.repeat(-1, len(run_keys)))), np.int64)
        self._tick += 1
        self._used[run_rows[run_rows >= 0]] = self._tick  # before making rows: never evict what is being recorded
        made = run_rows < 0
        for i in np.flatnonzero(made).tolist():
            run_rows[i] = self._new_row(tenant, run_keys[i])
        return run_rows, made

    def _new_row(self, tenant: str, key: bytes) -> int:
        if not self._free:
            if len(self._keys) < self.max_series:
                self._grow(min(self.max_series, max(1024, 2 * len(self._keys))))
            else:
                self._evict(max(1, self.max_series // 8))
        row = self._free.pop()
        self._rows.setdefault(tenant, {})[key] = row
        self._keys[row] = (tenant, key)
        self._used[row] = self._tick
        self._newest[row] = NONE
        return row

    def _grow(self, capacity: int) -> None:
        extra = capacity - len(self._keys)
        self._newest = np.r_[self._newest, np.full(extra, NONE, np.int64)]
        self._floor = np.r_[self._floor, np.full(extra, NONE, np.int64)]
        self._used = np.r_[self._used, np.zeros(extra, np.int64)]
        self._free += range(capacity - 1, len(self._keys) - 1, -1)
        self._keys += [None] * extra

    def _evict(self, count: int) -> None:
        """Forget the `count` least recently delivered series, and their timestamps."""
        oldest = np.argpartition(self._used, count - 1)[:count]
        for row in oldest.tolist():
            key = self._keys[row]
            if key is not None:
                del self._rows[key[0]][key[1]]
                self._keys[row] = None
                self._free.append(row)
        keys = self._stamps.whole()
        self._stamps.replace(keys[~np.isin(keys >> TS_BITS, oldest)])
        self._newest[oldest] = NONE
        self._floor[oldest] = NONE
        self._used[oldest] = 0

    def _forget_oldest(self) -> None:
        """Down to 3/4 of max_samples, the oldest timestamps first (whatever their series)."""
        keys = self._stamps.whole()
        stamps = keys & (TS_LIMIT - 1)
        drop = len(keys) - self.max_samples * 3 // 4
        cut = int(np.partition(stamps, drop)[drop])
        self._stamps.replace(keys[stamps >= cut])
        self.forgotten_below = max(self.forgotten_below, cut)

    def to_bytes(self) -> bytes:
        """The whole log: per tenant, one entry with each series' floor, newest and remembered timestamps."""
        with self._lock:
            keys = self._stamps.whole()
            parts = [MAGIC, struct.pack("<q", self.forgotten_below)]
            for tenant, known in self._rows.items():
                if not known:
                    continue
                run_keys = list(known)
                rows = np.fromiter(known.values(), np.int64, len(known))
                order = np.argsort(self._used[rows], kind="stable")  # least recently delivered first
                rows = rows[order]
                run_keys = [run_keys[i] for i in order.tolist()]
                lo = np.searchsorted(keys, rows << TS_BITS)
                hi = np.searchsorted(keys, (rows + 1) << TS_BITS)
                counts = hi - lo
                take = np.repeat(lo - np.r_[0, np.cumsum(counts)[:-1]], counts) + np.arange(int(counts.sum()))
                parts.append(_entry(tenant, run_keys, self._floor[rows], self._newest[rows], counts,
                                    keys[take] & (TS_LIMIT - 1)))
            self.changes = 0
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, max_samples: int = DEFAULT_MAX_SAMPLES, max_series: int = DEFAULT_MAX_SERIES,
                   journal: bytes = b"") -> tuple[DeliveredLog, str | None]:
        """A log saved by to_bytes (b"" for none), then the entries appended after it (`journal`).

        ValueError (saying where) if `data` is not a saved log. A journal cut short (the process died while
        appending) is read up to its last whole entry; the second value then says what was left out.
        """
        log = cls(max_samples, max_series)
        if data:
            if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
                raise ValueError("not a delivered-timestamps file (bad header)")
            (log.forgotten_below,) = struct.unpack_from("<q", data, len(MAGIC))
            log._apply(data, len(MAGIC) + 8, strict=True)
        torn = log._apply(journal, 0, strict=False)
        log.changes = 0
        return log, torn

    def _apply(self, data: bytes, at: int, strict: bool) -> str | None:
        while at < len(data):
            problem = None
            if at + _ENTRY.size > len(data):
                problem = f"truncated entry header at byte {at}"
            else:
                tenant_len, runs, samples, blob_len = _ENTRY.unpack_from(data, at)
                end = at + _ENTRY.size + tenant_len + 24 * runs + blob_len + 8 * samples
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
            at += tenant_len
            lengths = np.frombuffer(data, "<u4", runs, at).astype(np.int64)
            floors = np.frombuffer(data, "<i8", runs, at + 4 * runs).astype(np.int64)
            newest = np.frombuffer(data, "<i8", runs, at + 12 * runs).astype(np.int64)
            counts = np.frombuffer(data, "<u4", runs, at + 20 * runs).astype(np.int64)
            at += 24 * runs
            bounds = np.r_[0, np.cumsum(lengths)].tolist()
            run_keys = [data[at + a:at + b] for a, b in zip(bounds, bounds[1:], strict=False)]
            stamps = np.frombuffer(data, "<i8", samples, at + blob_len).astype(np.int64)
            if int(counts.sum()) != samples:
                raise ValueError(f"entry at byte {at}: series counts add up to {int(counts.sum())}, not {samples}")
            with self._lock:
                self._record_runs(tenant, run_keys, floors, newest, counts, stamps)
            at = end
        return None


def _keys_of(keys: list[bytes], ids: np.ndarray) -> list[bytes]:
    ids_list = ids.tolist()
    return [keys[ids_list[0]]] if len(ids_list) == 1 else list(operator.itemgetter(*ids_list)(keys))


def _entry(tenant: str, run_keys: list[bytes], floors: np.ndarray, newest: np.ndarray, counts: np.ndarray,
           timestamps: np.ndarray) -> bytes:
    """Series runs as one saved-log entry (a whole request in a few numpy calls, not Python per series)."""
    encoded = tenant.encode()
    blob = b"".join(run_keys)
    lengths = np.fromiter(map(len, run_keys), np.uint32, len(run_keys))
    return b"".join([_ENTRY.pack(len(encoded), len(run_keys), len(timestamps), len(blob)), encoded,
                     lengths.astype("<u4").tobytes(), np.asarray(floors, "<i8").tobytes(),
                     np.asarray(newest, "<i8").tobytes(), np.asarray(counts, "<u4").tobytes(), blob,
                     np.asarray(timestamps, "<i8").tobytes()])
