"""Tenants from a label (a sink's `tenant_label`): how a series' tenant is read from its labels, and the
reason given when its value is no valid tenant (where the metadata goes: batching.tenant_metadata_everywhere)."""

from __future__ import annotations

from transforms.core.protocol import TENANT_RULE, is_valid_tenant

Labels = tuple[tuple[str, str], ...]


def split_tenant(labels: Labels, tenant_label: str, drop: bool) -> tuple[Labels, str]:
    """The tenant label's value ("" if absent) and the labels, without it when `drop`.

    An invalid value keeps its label: the series goes to dead letters as it was, so a replay after a
    fix (or a look at the record) still shows which tenant it named.
    """
    value = next((v for n, v in labels if n == tenant_label), "")
    if drop and value and is_valid_tenant(value):
        labels = tuple((n, v) for n, v in labels if n != tenant_label)
    return labels, value


def bad_tenant_reason(sink_name: str, tenant_label: str, value: str) -> str:
    """The dead-letter reason of series whose tenant label names an invalid tenant (they go to no tenant)."""
    return f"sink {sink_name}: tenant label {tenant_label}={value!r} is not a valid tenant id ({TENANT_RULE})"
