"""Metric types from remote-write metadata, remembered per tenant across requests.

Prometheus 2.x sends 1.0 metadata in separate requests (every minute by default), so a
series usually arrives in a request with no metadata for it. Vector only looks in the same
request, and everything becomes a gauge; we remember what each tenant told us.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2

# 1.0 MetricMetadata.MetricType and 2.0 Metadata.MetricType share their numbering.
TYPE_NAMES = {0: "unknown", 1: "counter", 2: "gauge", 3: "histogram", 4: "gaugehistogram",
              5: "summary", 6: "info", 7: "stateset"}
TYPE_NUMBERS = {name: number for number, name in TYPE_NAMES.items()}
FamilyMetadata = tuple[int, str, str]  # (type number, help, unit) of a metric family
MetadataLookup = Callable[[str], FamilyMetadata | None]  # family name -> its metadata, if known
# Suffixes a sample name may add to its family name (text format and OpenMetrics).
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created", "_gcount", "_gsum", "_info")


def family_candidates(name: str) -> list[str]:
    """The metric-family names a sample name may belong to, most specific first."""
    out = [name]
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            out.append(name[: -len(suffix)])
    return out


def v1_types(metadata: Iterable[remote_v1_pb2.MetricMetadata]) -> dict[str, str]:
    """family name -> type name, from a 1.0 request's metadata entries."""
    return {m.metric_family_name: TYPE_NAMES.get(m.type, "unknown") for m in metadata}


class MetadataStore:
    """tenant -> metric family -> type name. Thread-safe; bounded per tenant."""

    def __init__(self, max_families_per_tenant: int = 1_000_000) -> None:
        self._types: dict[str, dict[str, str]] = {}
        self._versions: dict[str, int] = {}  # per tenant, bumped when a type changes: caches of types check it
        self._lock = threading.Lock()
        self._limit = max_families_per_tenant
        # tenant -> family -> (hour, metadata) last archived: a family goes to the archive about once an hour
        self._archived: dict[str, dict[str, tuple[int, FamilyMetadata]]] = {}

    def update_v1(self, tenant: str, metadata: Iterable[remote_v1_pb2.MetricMetadata]) -> None:
        updates = v1_types(metadata)
        if updates:
            self.update(tenant, updates)

    def update(self, tenant: str, types: dict[str, str]) -> None:
        with self._lock:
            known = self._types.setdefault(tenant, {})
            if all(known.get(family) == kind for family, kind in types.items()):
                return
            if len(known) + len(types) > self._limit:
                known.clear()
            known.update(types)
            self._versions[tenant] = self._versions.get(tenant, 0) + 1

    def version(self, tenant: str) -> int:
        """Changes whenever the tenant's types change."""
        return self._versions.get(tenant, 0)

    def type_of(self, tenant: str, name: str) -> str:
        """The family type for a sample name, or 'unknown'."""
        known = self._types.get(tenant)
        if not known:
            return "unknown"
        for family in family_candidates(name):
            found = known.get(family)
            if found:
                return found
        return "unknown"

    def unarchived(self, tenant: str, hour: int, entries: dict[str, FamilyMetadata]) -> dict[str, FamilyMetadata]:
        """The entries not yet archived in this hour with this content."""
        known = self._archived.get(tenant, {})
        return {family: meta for family, meta in entries.items() if known.get(family) != (hour, meta)}

    def mark_archived(self, tenant: str, hour: int, entries: dict[str, FamilyMetadata]) -> None:
        """Called once the records are out of the converting step (a finished bundle), not before: a failed
        bundle's records are emitted again by its retry."""
        with self._lock:
            known = self._archived.setdefault(tenant, {})
            if len(known) + len(entries) > self._limit:
                known.clear()
            known.update({family: (hour, meta) for family, meta in entries.items()})

    def forget_archived(self) -> None:
        """A run whose files were not all written (the local loop retries it): archive everything again."""
        with self._lock:
            self._archived.clear()

    def snapshot(self) -> dict[str, dict[str, str]]:
        with self._lock:
            return {tenant: dict(types) for tenant, types in self._types.items()}


def v2_type(series: remote_v2_pb2.TimeSeries) -> str:
    return TYPE_NAMES.get(series.metadata.type, "unknown") if series.HasField("metadata") else "unknown"
