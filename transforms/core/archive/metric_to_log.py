"""Metric-to-log: one JSON line per sample, in the shape of Vector's `metric_to_log`.

    {"name":"http_requests_total","tags":{"job":"api"},"timestamp":"2026-11-24T21:00:00.123Z",
     "kind":"absolute","counter":{"value":1027.0}}

What Vector loses, we keep:
- the type comes from metadata (2.0 per series, 1.0 remembered per tenant), untyped is a gauge;
- classic histogram and summary series stay one ordinary line per sample;
- NaN, +Inf, -Inf and the stale marker survive, distinguishable (see `encode_value`);
- native histograms, exemplars and start timestamps get documented extra shapes;
- every sample is a line: nothing is aggregated or de-duplicated.

Lines are grouped by partition (tenant, UTC date, UTC hour of the sample's own timestamp).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import NamedTuple

from transforms.core.metadata import MetadataStore, v2_type
from transforms.core.protocol import (
    METRIC_NAME_LABEL,
    PROMETHEUS_NAN_BITS,
    RESET_HINT_NAMES,
    STALE_NAN_BITS,
    Protocol,
    float_bits,
    format_seconds,
    ref_pairs,
)
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2
from transforms.core.wire.validation import Counts

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


class ConversionError(ValueError):
    """A message that cannot be turned into lines (it goes to the dead-letter store whole)."""


class Partition(NamedTuple):
    tenant: str
    date: str  # YYYY-MM-DD (UTC)
    hour: str  # HH (UTC)


def encode_value(value: float) -> str:
    """A sample value as a JSON fragment, lossless.

    Finite values are JSON numbers (shortest round-trip form). JSON has no NaN or infinity, so:
    "+Inf", "-Inf", "StaleNaN" (Prometheus' stale marker, bits 0x7ff0000000000002),
    "NaN" (Prometheus' NaN, bits 0x7ff8000000000001), and "NaN:0x<16 hex digits>" for any
    other NaN payload.
    """
    if math.isfinite(value):
        return repr(value)
    if value == math.inf:
        return '"+Inf"'
    if value == -math.inf:
        return '"-Inf"'
    bits = float_bits(value)
    if bits == STALE_NAN_BITS:
        return '"StaleNaN"'
    if bits == PROMETHEUS_NAN_BITS:
        return '"NaN"'
    return f'"NaN:0x{bits:016x}"'


def value_kind(family_type: str, name: str) -> str:
    """'counter' or 'gauge' for one sample series, from its family's type.

    Classic histogram and summary components: _bucket, _count and _sum are cumulative
    (counter); quantiles, _created and everything gauge-like or untyped are gauges.
    """
    if name.endswith("_created"):
        return "gauge"
    if family_type == "counter":
        return "counter"
    if family_type in ("histogram", "summary") and name.endswith(("_bucket", "_count", "_sum")):
        return "counter"
    return "gauge"


def _second_prefix(seconds: int) -> str:
    try:
        return format_seconds(seconds)
    except (OverflowError, OSError, ValueError) as exc:
        raise ConversionError(f"timestamp {seconds * 1000} ms is outside the representable range") from exc


class _Lines:
    """Collects lines per partition. Per second of sample time it caches the RFC 3339 prefix and the
    partition's list, so a sample costs one dict lookup and one f-string."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.by_partition: dict[Partition, list[str]] = defaultdict(list)
        self._seconds: dict[int, tuple[str, list[str]]] = {}

    def _second(self, seconds: int) -> tuple[str, list[str]]:
        prefix = _second_prefix(seconds)
        entry = (prefix, self.by_partition[Partition(self.tenant, prefix[:10], prefix[11:13])])
        self._seconds[seconds] = entry
        return entry

    def stamp(self, ms: int) -> str:
        seconds, millis = divmod(ms, 1000)
        prefix, _ = self._seconds.get(seconds) or self._second(seconds)
        return f"{prefix}.{millis:03d}Z"

    def add(self, head: str, ms: int, tail: str) -> None:
        seconds, millis = divmod(ms, 1000)
        prefix, out = self._seconds.get(seconds) or self._second(seconds)
        out.append(f'{head}"timestamp":"{prefix}.{millis:03d}Z",{tail}')


def _head(labels: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """The series' name and its '{"name":...,"tags":{...},' prefix."""
    name = ""
    tags = {}
    for key, value in labels:
        if key == METRIC_NAME_LABEL:
            name = value
        else:
            tags[key] = value
    return name, f'{{"name":{_dumps(name)},"tags":{_dumps(tags)},'


def _histogram(h: remote_v1_pb2.Histogram | remote_v2_pb2.Histogram) -> str:
    """A native histogram, kept in its wire encoding (spans + deltas or counts) so it can be restored."""
    out: dict[str, object] = {}
    out["count"] = h.count_float if h.WhichOneof("count") == "count_float" else h.count_int
    out["sum"] = h.sum
    out["schema"] = h.schema
    out["zero_threshold"] = h.zero_threshold
    out["zero_count"] = h.zero_count_float if h.WhichOneof("zero_count") == "zero_count_float" else h.zero_count_int
    for side in ("negative", "positive"):
        spans = getattr(h, f"{side}_spans")
        if spans:
            out[f"{side}_spans"] = [[s.offset, s.length] for s in spans]
        for kind in ("deltas", "counts"):
            values = getattr(h, f"{side}_{kind}")
            if values:
                out[f"{side}_{kind}"] = list(values)
    if h.custom_values:
        out["custom_values"] = list(h.custom_values)
    out["reset_hint"] = RESET_HINT_NAMES[h.reset_hint] if 0 <= h.reset_hint < len(RESET_HINT_NAMES) else "unknown"
    # JSON has no NaN/Inf: encode those floats the same way as sample values
    parts = []
    for key, value in out.items():
        if isinstance(value, float) and not math.isfinite(value):
            parts.append(f"{_dumps(key)}:{encode_value(value)}")
        elif isinstance(value, list) and any(isinstance(v, float) and not math.isfinite(v) for v in value):
            parts.append(f"{_dumps(key)}:[{','.join(encode_value(v) for v in value)}]")
        else:
            parts.append(f"{_dumps(key)}:{_dumps(value)}")
    return "{" + ",".join(parts) + "}"


def _exemplar_tail(labels: Sequence[tuple[str, str]], value: float) -> str:
    return f'"kind":"absolute","exemplar":{{"value":{encode_value(value)},"labels":{_dumps(dict(labels))}}}}}'


def _start(ms: int, lines: _Lines) -> str:
    return f',"start_timestamp":"{lines.stamp(ms)}"' if ms else ""


class SeriesHeads:
    """label-set key (from validation) -> (name, JSON head): a series' prefix is built once, not per
    request. Owned by whoever converts (a DoFn's setup); cleared wholesale at `limit` series."""

    def __init__(self, limit: int = 500_000) -> None:
        self.limit = limit
        self._heads: dict[bytes, tuple[str, str]] = {}

    def head(self, series: remote_v1_pb2.TimeSeries, key: bytes | None) -> tuple[str, str]:
        if key is not None:
            cached = self._heads.get(key)
            if cached is not None:
                return cached
        found = _head([(lab.name, lab.value) for lab in series.labels])
        if key is not None:
            if len(self._heads) >= self.limit:
                self._heads.clear()
            self._heads[key] = found
        return found


def convert_v1(request: remote_v1_pb2.WriteRequest, tenant: str, store: MetadataStore,
               series_keys: Sequence[bytes] | None = None, counts: Counts | None = None,
               heads: SeriesHeads | None = None) -> dict[Partition, list[str]]:
    """Lines of a 1.0 request. Its metadata first updates the tenant's remembered types.

    `series_keys` and `counts` (from DecodedRequest), with a `heads` cache, let per-series JSON be
    reused across requests and skip reading histogram/exemplar fields a request does not have (each
    read costs a Python object).
    """
    heads = heads or SeriesHeads()
    with_histograms = counts is None or counts.histograms > 0
    with_exemplars = counts is None or counts.exemplars > 0
    store.update_v1(tenant, request.metadata)
    lines = _Lines(tenant)
    kinds: dict[str, str] = {}
    for index, series in enumerate(request.timeseries):
        name, head = heads.head(series, series_keys[index] if series_keys is not None else None)
        prefix = kinds.get(name)
        if prefix is None:
            kind = value_kind(store.type_of(tenant, name), name)
            prefix = kinds[name] = f'"kind":"absolute","{kind}":{{"value":'
        for sample in series.samples:
            lines.add(head, sample.timestamp, f"{prefix}{encode_value(sample.value)}}}}}")
        if with_histograms:
            for h in series.histograms:
                lines.add(head, h.timestamp, f'"kind":"absolute","native_histogram":{_histogram(h)}}}')
        if with_exemplars:
            for ex in series.exemplars:
                labels = [(lab.name, lab.value) for lab in ex.labels]
                lines.add(head, ex.timestamp, _exemplar_tail(labels, ex.value))
    return lines.by_partition


def convert_v2(request: remote_v2_pb2.Request, tenant: str) -> dict[Partition, list[str]]:
    """Lines of a 2.0 request; types come from each series' own metadata."""
    symbols = list(request.symbols)
    lines = _Lines(tenant)
    for series in request.timeseries:
        name, head = _head(ref_pairs(series.labels_refs, symbols))
        kind = value_kind(v2_type(series), name)
        prefix = f'"kind":"absolute","{kind}":{{"value":'
        created = series.created_timestamp
        for sample in series.samples:
            start = _start(sample.start_timestamp or created, lines)
            lines.add(head, sample.timestamp, f"{prefix}{encode_value(sample.value)}}}{start}}}")
        for h in series.histograms:
            start = _start(h.start_timestamp or created, lines)
            lines.add(head, h.timestamp, f'"kind":"absolute","native_histogram":{_histogram(h)}{start}}}')
        for ex in series.exemplars:
            lines.add(head, ex.timestamp, _exemplar_tail(ref_pairs(ex.labels_refs, symbols), ex.value))
    return lines.by_partition


def convert(message: remote_v1_pb2.WriteRequest | remote_v2_pb2.Request, protocol: Protocol, tenant: str,
            store: MetadataStore, series_keys: Sequence[bytes] | None = None,
            counts: Counts | None = None, heads: SeriesHeads | None = None) -> dict[Partition, list[str]]:
    if protocol is Protocol.V1:
        return convert_v1(message, tenant, store, series_keys, counts, heads)  # type: ignore[arg-type]
    return convert_v2(message, tenant)  # type: ignore[arg-type]


def message_protocol(attributes: dict[str, str]) -> Protocol:
    """The protocol a published message says it carries (the receiver's `protocol` attribute)."""
    try:
        return Protocol(attributes.get("protocol", ""))
    except ValueError as exc:
        raise ConversionError(f"missing or unknown 'protocol' attribute {attributes.get('protocol')!r}") from exc


def is_metadata_only(attributes: dict[str, str]) -> bool:
    """A 1.0 request carrying no samples (Prometheus' periodic metadata requests), by its attributes."""
    return attributes.get("protocol") == "1.0" and all(
        attributes.get(k) == "0" for k in ("samples", "histograms", "exemplars"))
