"""Native histograms for the end-to-end tests: varied ones to send (integer and float, positive and negative
spans, the zero bucket, every reset hint, stale markers), and the buckets Prometheus' query API should show
for each, derived from the sent fields alone."""

from __future__ import annotations

import math

from transforms.core.protocol import STALE_NAN
from transforms.core.wire.proto import remote_v1_pb2

Histogram = remote_v1_pb2.Histogram
HINTS = (Histogram.UNKNOWN, Histogram.YES, Histogram.NO, Histogram.GAUGE)
SCHEMAS = (-1, 0, 1, 3)
# Prometheus' JSON bucket boundary rules: 0 (lower, upper], 1 [lower, upper), 3 [lower, upper].
OPEN_LOWER, OPEN_UPPER, CLOSED = 0, 1, 3


def deltas(counts: list[int]) -> list[int]:
    """Integer bucket counts as the wire's deltas (the first absolute, then each minus the previous)."""
    return [c - p for c, p in zip(counts, [0, *counts[:-1]], strict=True)]


def make_histogram(i: int, step: int, timestamp: int, floats: bool) -> Histogram:
    """Series i's histogram at `step`: counts grow with the step, spans and schema vary with i.

    Two positive spans with a gap (the second offset is relative to the end of the first), one
    negative span (negative offsets too), a populated zero bucket on even i; no bucket is ever 0."""
    grow = step + 1
    positive = [grow * (1 + (i + j) % 3) for j in range(3)]
    negative = [grow * (1 + i % 2)]
    zero = grow * 2 if i % 2 == 0 else 0
    scale = 0.5 if floats else 1
    h = Histogram(sum=round(grow * (i + 1) * 1.75, 6), schema=SCHEMAS[i % len(SCHEMAS)],
                  zero_threshold=0.001 * (1 + i % 3), reset_hint=HINTS[i % len(HINTS)], timestamp=timestamp)
    h.positive_spans.add(offset=i % 3 - 1, length=2)
    h.positive_spans.add(offset=1 + i % 2, length=1)
    h.negative_spans.add(offset=-(i % 2), length=1)
    if floats:
        h.count_float = scale * (sum(positive) + sum(negative) + zero)
        h.zero_count_float = scale * zero
        h.positive_counts.extend(scale * c for c in positive)
        h.negative_counts.extend(scale * c for c in negative)
    else:
        h.count_int = sum(positive) + sum(negative) + zero
        h.zero_count_int = zero
        h.positive_deltas.extend(deltas(positive))
        h.negative_deltas.extend(deltas(negative))
    return h


def stale_histogram(timestamp: int) -> Histogram:
    """A histogram stale marker, as Prometheus writes one: the sum holds the stale NaN."""
    return Histogram(count_int=0, sum=STALE_NAN, schema=0, timestamp=timestamp)


def _bucket_counts(spans, deltas_: list[int], counts: list[float], floats: bool) -> list[tuple[int, float]]:
    """(bucket index, count) of one side, walking the spans."""
    values = list(counts) if floats else [float(c) for c in _running(deltas_)]
    out, index, at = [], 0, 0
    for n, span in enumerate(spans):
        index = span.offset if n == 0 else index + span.offset
        for _ in range(span.length):
            out.append((index, values[at]))
            index += 1
            at += 1
    return out


def _running(deltas_: list[int]) -> list[int]:
    total, out = 0, []
    for d in deltas_:
        total += d
        out.append(total)
    return out


def expected_buckets(h: Histogram) -> list[tuple[int, float, float, float]]:
    """What /api/v1/query shows for `h`: (boundary rule, lower, upper, count), negative buckets first (from the
    most negative), then the zero bucket, then positive ones; buckets holding 0 are left out."""
    floats = h.WhichOneof("count") == "count_float"
    base = 2.0 ** (2.0 ** -h.schema)
    out = []
    negative = _bucket_counts(h.negative_spans, list(h.negative_deltas), list(h.negative_counts), floats)
    for index, count in reversed(negative):
        out.append((OPEN_UPPER, -base ** index, -base ** (index - 1), count))
    zero = h.zero_count_float if floats else float(h.zero_count_int)
    if zero:
        out.append((CLOSED, -h.zero_threshold, h.zero_threshold, zero))
    for index, count in _bucket_counts(h.positive_spans, list(h.positive_deltas), list(h.positive_counts), floats):
        out.append((OPEN_LOWER, base ** (index - 1), base ** index, count))
    return [b for b in out if b[3]]


def api_buckets(value: dict) -> list[tuple[int, float, float, float]]:
    return [(int(rule), float(lower), float(upper), float(count)) for rule, lower, upper, count in value["buckets"]]


def same_buckets(got: list[tuple[int, float, float, float]], want: list[tuple[int, float, float, float]]) -> bool:
    """Boundaries equal to 12 digits (Prometheus computes them from a table, not with pow), counts exactly."""
    return len(got) == len(want) and all(
        g[0] == w[0] and g[3] == w[3] and math.isclose(g[1], w[1], rel_tol=1e-12) and math.isclose(g[2], w[2],
                                                                                                   rel_tol=1e-12)
        for g, w in zip(got, want, strict=True))


def histogram_count(h: Histogram) -> float:
    return h.count_float if h.WhichOneof("count") == "count_float" else float(h.count_int)
