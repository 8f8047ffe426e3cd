"""metric_to_log's whole-request conversion: every line of a remote-write request from its upb message.

The oracle of the pipeline's archive lines (transforms/core/archive/lines.py: compiled float lines, and
`metric_to_log.side_lines` for the histograms and exemplars of the series that carry them), which must be
byte for byte these, partition by partition and in this order: series by series, each series' samples,
then its histograms, then its exemplars. Nothing in production runs it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from transforms.core.archive.metric_to_log import (
    Partition,
    PartitionLines,
    encode_value,
    exemplar_tail,
    histogram_json,
    start_field,
    value_kind,
)
from transforms.core.metadata import MetadataStore, v2_type
from transforms.core.protocol import METRIC_NAME_LABEL, Protocol, ref_pairs
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2
from transforms.core.wire.validation import Counts

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


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
    lines = PartitionLines(tenant)
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
                lines.add(head, h.timestamp, f'"kind":"absolute","native_histogram":{histogram_json(h)}}}')
        if with_exemplars:
            for ex in series.exemplars:
                labels = [(lab.name, lab.value) for lab in ex.labels]
                lines.add(head, ex.timestamp, exemplar_tail(labels, ex.value))
    return lines.by_partition


def convert_v2(request: remote_v2_pb2.Request, tenant: str) -> dict[Partition, list[str]]:
    """Lines of a 2.0 request; types come from each series' own metadata."""
    symbols = list(request.symbols)
    lines = PartitionLines(tenant)
    for series in request.timeseries:
        name, head = _head(ref_pairs(series.labels_refs, symbols))
        kind = value_kind(v2_type(series), name)
        prefix = f'"kind":"absolute","{kind}":{{"value":'
        created = series.created_timestamp
        for sample in series.samples:
            start = start_field(sample.start_timestamp or created, lines)
            lines.add(head, sample.timestamp, f"{prefix}{encode_value(sample.value)}}}{start}}}")
        for h in series.histograms:
            start = start_field(h.start_timestamp or created, lines)
            lines.add(head, h.timestamp, f'"kind":"absolute","native_histogram":{histogram_json(h)}{start}}}')
        for ex in series.exemplars:
            lines.add(head, ex.timestamp, exemplar_tail(ref_pairs(ex.labels_refs, symbols), ex.value))
    return lines.by_partition


def convert(message: remote_v1_pb2.WriteRequest | remote_v2_pb2.Request, protocol: Protocol, tenant: str,
            store: MetadataStore, series_keys: Sequence[bytes] | None = None,
            counts: Counts | None = None, heads: SeriesHeads | None = None) -> dict[Partition, list[str]]:
    if protocol is Protocol.V1:
        return convert_v1(message, tenant, store, series_keys, counts, heads)  # type: ignore[arg-type]
    return convert_v2(message, tenant)  # type: ignore[arg-type]
