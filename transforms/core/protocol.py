"""Remote-write protocol constants, in one place (specs 1.0 and 2.0)."""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime


class Protocol(enum.StrEnum):
    """The two remote-write message formats, by spec version."""

    V1 = "1.0"
    V2 = "2.0"


# The pipeline's cap on one message's decompressed size (the receiver already enforced its own, smaller one).
MAX_DECOMPRESSED = 1 << 30

MEDIA_TYPE = "application/x-protobuf"
PROTO_V1 = "prometheus.WriteRequest"
PROTO_V2 = "io.prometheus.write.v2.Request"
CONTENT_TYPE_V1 = MEDIA_TYPE
CONTENT_TYPE_V2 = f"{MEDIA_TYPE};proto={PROTO_V2}"
CONTENT_ENCODING = "snappy"

# Request headers a sender MUST send; a sink never lets users override them.
HEADER_VERSION = "X-Prometheus-Remote-Write-Version"
VERSION_HEADER_V1 = "0.1.0"
VERSION_HEADER_V2 = "2.0.0"
RESERVED_REQUEST_HEADERS = frozenset(
    h.lower() for h in ("Content-Encoding", "Content-Type", HEADER_VERSION, "User-Agent")
)

# 2.0 receivers MUST report what they wrote (also on errors, as 0).
HEADER_SAMPLES_WRITTEN = "X-Prometheus-Remote-Write-Samples-Written"
HEADER_HISTOGRAMS_WRITTEN = "X-Prometheus-Remote-Write-Histograms-Written"
HEADER_EXEMPLARS_WRITTEN = "X-Prometheus-Remote-Write-Exemplars-Written"
WRITTEN_HEADERS = (HEADER_SAMPLES_WRITTEN, HEADER_HISTOGRAMS_WRITTEN, HEADER_EXEMPLARS_WRITTEN)


def parse_written(headers: Mapping[str, str]) -> tuple[int, int, int] | None:
    """(samples, histograms, exemplars) a 2.0 receiver says it wrote; None when it sent none of the headers.

    Per spec 2.0 a 2xx without any of them comes from a 1.x receiver, which decoded an empty request.
    A header that is missing or not a number counts 0 (the receiver claims nothing for it).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    found = [lowered.get(name.lower()) for name in WRITTEN_HEADERS]
    if all(value is None for value in found):
        return None
    counts = []
    for value in found:
        try:
            counts.append(max(0, int((value or "0").strip())))
        except ValueError:
            counts.append(0)
    return counts[0], counts[1], counts[2]

HEADER_TENANT = "X-Scope-OrgID"
DEFAULT_TENANT = "default"
# Tenant ids become archive path segments (tenant=T), so only path-safe ones (Cortex's rules).
_TENANT = re.compile(r"[A-Za-z0-9!_.*'()-]{1,150}\Z")
TENANT_RULE = "1-150 of [A-Za-z0-9!_.*'()-], not . or .."


def is_valid_tenant(tenant: str) -> bool:
    return bool(_TENANT.match(tenant)) and tenant not in (".", "..")

METRIC_NAME_LABEL = "__name__"

# Prometheus marks a series that disappeared with this exact NaN bit pattern.
# Any other NaN is an ordinary sample value; the two must never be confused.
STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]
# Prometheus' own NaN (Go's math.NaN()), an ordinary sample value; the archive names it "NaN".
PROMETHEUS_NAN_BITS = 0x7FF8000000000001
PROMETHEUS_NAN: float = struct.unpack("<d", struct.pack("<Q", PROMETHEUS_NAN_BITS))[0]

# Histogram.ResetHint by number (1.0 and 2.0 number it alike): the names the archive writes.
RESET_HINT_NAMES = ("unknown", "yes", "no", "gauge")
RESET_HINTS = {name: number for number, name in enumerate(RESET_HINT_NAMES)}


def format_seconds(seconds: int) -> str:
    """Epoch seconds -> 'YYYY-MM-DDTHH:MM:SS' (UTC); OverflowError, OSError or ValueError out of range."""
    t = datetime.fromtimestamp(seconds, UTC)
    # zero-padded by hand: strftime's %Y does not pad years before 1000 on every platform
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"


def format_ms(ms: int) -> str:
    """A Prometheus timestamp (epoch ms) as RFC 3339 'YYYY-MM-DDTHH:MM:SS.mmmZ': the archive's timestamp
    text, and how the receiver and the jobs print a moment."""
    return f"{format_seconds(ms // 1000)}.{ms % 1000:03d}Z"


def float_bits(value: float) -> int:
    """The IEEE-754 bit pattern of a float64, so NaN payloads can be compared."""
    return struct.unpack("<Q", struct.pack("<d", value))[0]


def ref_pairs(refs: Sequence[int], symbols: Sequence[str]) -> list[tuple[str, str]]:
    """2.0's labels_refs (name ref, value ref, ...) as (name, value) pairs; the refs are already validated."""
    return [(symbols[refs[i]], symbols[refs[i + 1]]) for i in range(0, len(refs), 2)]


def is_stale_marker(value: float) -> bool:
    """True only for Prometheus' staleness NaN, never for an ordinary NaN."""
    return value != value and float_bits(value) == STALE_NAN_BITS
