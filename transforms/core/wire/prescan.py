"""Typed front of the compiled wire-format module (transforms/core/wire/_wire.c): request limits, checked
before any protobuf message is built.

upb builds a message object per repeated element, and validation walks them in Python, so a
few megabytes of tiny repeated fields (empty series, empty samples, empty symbols) would cost
gigabytes and seconds. `check` counts them in one allocation-free C pass and refuses (413, naming
the limit) what exceeds the limits; malformed wire format is a 400.
"""

from __future__ import annotations

import dataclasses

from transforms.core.errors import InvalidPayload, PayloadTooLarge
from transforms.core.protocol import Protocol
from transforms.core.wire import _wire


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """What one request may carry; the defaults are the receiver's (see docs/receiver.md, "Request limits")."""

    series: int = 50_000  # TimeSeries (and 1.0 metadata entries)
    samples: int = 50_000  # float samples + native histogram samples + exemplars
    labels: int = 500_000  # label pairs (1.0 Label messages, 2.0 pairs of references), exemplars' included
    symbols: int = 1_000_000  # 2.0 symbols table entries
    buckets: int = 1_000_000  # native histogram spans, deltas, counts and custom values


@dataclasses.dataclass(frozen=True)
class WireCounts:
    """What a payload carries, counted from its wire format (2.0 `labels`: references / 2, rounded up)."""

    series: int = 0
    samples: int = 0
    histograms: int = 0
    exemplars: int = 0
    labels: int = 0
    symbols: int = 0
    metadata: int = 0
    buckets: int = 0


# The message naming each limit, in the order the scan may stop on them.
_LIMIT_MESSAGES = (
    ("series", lambda c: c.series + c.metadata, "series (with metadata entries)", "--max-series-per-request"),
    ("samples", lambda c: c.samples + c.histograms + c.exemplars, "samples (with histograms and exemplars)",
     "--max-samples-per-request"),
    ("labels", lambda c: c.labels, "label pairs", "--max-labels-per-request"),
    ("symbols", lambda c: c.symbols, "symbols", "--max-symbols-per-request"),
    ("buckets", lambda c: c.buckets, "histogram buckets", "--max-buckets-per-request"),
)


def scan(payload: bytes, protocol: Protocol, limits: RequestLimits | None = None) -> tuple[WireCounts, bool]:
    """Count what an uncompressed payload carries; stops early (complete=False) once past a limit.

    Raises InvalidPayload on malformed wire format (truncated or overlong varints, lengths past
    the end, field number 0, group wire types).
    """
    limits = limits or RequestLimits(*(2**61,) * 5)
    v1 = protocol is Protocol.V1
    scanner = _wire.scan_v1 if v1 else _wire.scan_v2
    try:
        # 2.0 counts label references, two per label pair
        found = scanner(payload, max_series=limits.series, max_samples=limits.samples,
                        max_labels=limits.labels if v1 else 2 * limits.labels, max_symbols=limits.symbols,
                        max_buckets=limits.buckets)
    except ValueError as exc:
        raise InvalidPayload(str(exc)) from exc
    complete = found.pop("complete")
    if not v1:
        found["labels"] = (found["labels"] + 1) // 2
    return WireCounts(**found), complete


def refuse_over(counts: WireCounts, limits: RequestLimits) -> None:
    """Refuse (PayloadTooLarge, 413) counts over any limit, naming the first in _LIMIT_MESSAGES' order."""
    for field, measure, what, flag in _LIMIT_MESSAGES:
        limit = getattr(limits, field)
        if measure(counts) > limit:
            raise PayloadTooLarge(f"request carries more than {limit} {what}: over the limit of {flag}")


def check(payload: bytes, protocol: Protocol, limits: RequestLimits) -> WireCounts:
    """scan, then refuse (PayloadTooLarge, 413) a payload over any limit, naming it."""
    counts, _ = scan(payload, protocol, limits)
    refuse_over(counts, limits)
    return counts
