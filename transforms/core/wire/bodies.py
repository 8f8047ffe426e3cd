"""Typed front of the compiled request-body encoder (transforms/core/wire/_wire_encode.c).

Request bodies from columns: per sample an output-series index (uint32), timestamp (int64 ms), value
bits (uint64, so NaN payloads and the stale marker survive) and start timestamp (int64, 0 = none),
grouped by series and in time order. The sinks (`transforms.core.sink.columns`) and the restore
(`transforms.core.restore.selection`) encode through here; only the wire package touches `_wire`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from transforms.core.metadata import FamilyMetadata
from transforms.core.wire import _wire


def plan_requests(keys: list[bytes], series: np.ndarray, timestamps: np.ndarray, values: np.ndarray,
                  starts: np.ndarray | None, max_points: int, max_bytes: int) -> list[int]:
    """Sample positions where a new request starts: each series' run cut into pieces of max_points, pieces
    packed up to max_points and max_bytes of 1.0 TimeSeries."""
    return _wire.plan_requests(keys, series, timestamps, values, starts, max_points, max_bytes)


def encode_v1(keys: list[bytes], series: np.ndarray, timestamps: np.ndarray, values: np.ndarray, lo: int, hi: int,
              starts: np.ndarray | None = None) -> bytes:
    """An uncompressed 1.0 WriteRequest of samples [lo, hi); keys[i] is series i's Label fields. `starts`
    adds Sample field 3, which 1.0 parsers keep as an unknown field (how 2.0 start timestamps ride along)."""
    return _wire.encode_v1(keys, series, timestamps, values, lo, hi, starts=starts)


def encode_v2(labels: Sequence[Sequence[tuple[str, str]]], metadata: Mapping[int, FamilyMetadata | None],
              series: np.ndarray, timestamps: np.ndarray, values: np.ndarray, starts: np.ndarray | None,
              lo: int, hi: int) -> bytes:
    """An uncompressed 2.0 Request of samples [lo, hi) (a symbols table per request); metadata by series index."""
    return _wire.encode_v2(labels, metadata, series, timestamps, values, starts, lo, hi)
