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

import collections
import re
import struct
import threading

import numpy as np

DEFAULT_MAX_SERIES = 100_000
DEFAULT_PER_SERIES = 64  # at a 15 s scrape interval: 16 minutes of redelivery horizon per series
MAGIC = b"PRWDELIVERED1\n"
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
    """One sink's delivered timestamps per series, bounded in memory; thread-safe (shards run in threads)."""

    def __init__(self, max_series: int = DEFAULT_MAX_SERIES, per_series: int = DEFAULT_PER_SERIES) -> None:
        if max_series < 1 or per_series < 1:
            raise ValueError("max_series and per_series must be >= 1")
        self.max_series = max_series
        self.per_series = per_series
        self._entries: collections.OrderedDict[Key, np.ndarray] = collections.OrderedDict()  # sorted int64 each
        self._lock = threading.Lock()
        self.changes = 0  # deliveries recorded since the last to_bytes(): whether saving is worth it

    def __len__(self) -> int:
        return len(self._entries)

    def timestamps(self, tenant: str, key: bytes) -> np.ndarray:
        """The delivered timestamps remembered for a series, ascending (empty if none)."""
        with self._lock:
            found = self._entries.get((tenant, key))
        return np.zeros(0, np.int64) if found is None else found

    def newest(self, tenant: str, key: bytes) -> int | None:
        found = self.timestamps(tenant, key)
        return int(found[-1]) if len(found) else None

    def already_delivered(self, tenant: str, keys: list[bytes], series: np.ndarray,
                          timestamps: np.ndarray) -> np.ndarray:
        """A mask over the samples: True where the sample's timestamp was delivered for its series.

        `series` indexes `keys` and holds each series in one run (a request's ordered columns do).
        """
        mask = np.zeros(len(series), bool)
        with self._lock:
            for lo, hi in series_runs(series):
                found = self._entries.get((tenant, keys[int(series[lo])]))
                if found is not None:
                    mask[lo:hi] = np.isin(timestamps[lo:hi], found, assume_unique=False)
        return mask

    def record(self, tenant: str, keys: list[bytes], series: np.ndarray, timestamps: np.ndarray) -> None:
        """The sink accepted these samples (2xx): remember their timestamps, newest per_series per series."""
        with self._lock:
            for lo, hi in series_runs(series):
                key = (tenant, keys[int(series[lo])])
                found = self._entries.get(key)
                stamps = np.unique(timestamps[lo:hi].astype(np.int64))
                merged = stamps if found is None else np.union1d(found, stamps)
                self._entries[key] = merged[-self.per_series:]
                self._entries.move_to_end(key)
            while len(self._entries) > self.max_series:
                self._entries.popitem(last=False)
            self.changes += 1

    def record_series(self, tenant: str, key: bytes, timestamps: list[int]) -> None:
        """One protobuf series' delivered timestamps (the path for histograms and exemplars)."""
        if timestamps:
            self.record(tenant, [key], np.zeros(len(timestamps), np.uint32), np.asarray(timestamps, np.int64))

    def to_bytes(self) -> bytes:
        """The whole log, oldest-delivered series first (so loading keeps the same eviction order)."""
        with self._lock:
            items = list(self._entries.items())
            self.changes = 0
        parts = [MAGIC]
        for (tenant, key), stamps in items:
            encoded = tenant.encode()
            parts += [_ENTRY.pack(len(encoded), len(key), len(stamps)), encoded, key,
                      stamps.astype("<i8").tobytes()]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, max_series: int = DEFAULT_MAX_SERIES,
                   per_series: int = DEFAULT_PER_SERIES) -> DeliveredLog:
        """A log saved by to_bytes; ValueError (saying where) if the bytes are not one."""
        log = cls(max_series, per_series)
        if not data.startswith(MAGIC):
            raise ValueError("not a delivered-timestamps file (bad header)")
        at = len(MAGIC)
        while at < len(data):
            if at + _ENTRY.size > len(data):
                raise ValueError(f"truncated entry header at byte {at}")
            tenant_len, key_len, count = _ENTRY.unpack_from(data, at)
            at += _ENTRY.size
            end = at + tenant_len + key_len + 8 * count
            if end > len(data):
                raise ValueError(f"truncated entry at byte {at}: needs {end - at} bytes, {len(data) - at} left")
            try:
                tenant = data[at:at + tenant_len].decode()
            except UnicodeDecodeError as exc:
                raise ValueError(f"bad tenant at byte {at}: {exc}") from None
            key = data[at + tenant_len:at + tenant_len + key_len]
            stamps = np.frombuffer(data, "<i8", count, at + tenant_len + key_len).astype(np.int64)
            log._entries[(tenant, key)] = np.unique(stamps)[-per_series:]
            at = end
        while len(log._entries) > max_series:
            log._entries.popitem(last=False)
        return log
