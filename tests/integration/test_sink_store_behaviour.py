"""How the real single-node stores treat what docs/sink-stores.md states about them: out-of-order samples and
the tenant header. VictoriaMetrics 1.79 and Prometheus 2.42, started here, fed by the forwarder with the
production HTTP service."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests

from tests.sink_helpers import BASE_MS, vm_export, wait_for
from tools import services
from transforms.core.protocol import Protocol
from transforms.core.sink import config
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1
from transforms.io.http_sink import HttpService
from transforms.io.sink_driver import Forwarder


@pytest.fixture(scope="module")
def victoria(log_dir) -> Iterator[str]:
    service, url = services.start_victoria_metrics(log_dir, name="victoria-behaviour")
    yield url
    service.stop()


@pytest.fixture(scope="module")
def prometheus(log_dir) -> Iterator[str]:
    service, url = services.start_prometheus(log_dir, "global: {}\n", receiver=True, name="prom-behaviour")
    yield url
    service.stop()


def forward(url: str, series: list[Series], tenant: str = "default", **entry) -> list[str]:
    (sink,) = config.from_document(json.dumps({"remote_write": [{"url": f"{url}/api/v1/write", **entry}]}))
    request = build_v1(series)
    forwarder = Forwarder(sink, service=HttpService(sink))
    try:
        return forwarder.forward([(codec.encode(request), codec.message_attributes(Protocol.V1, tenant, "now",
                                                                                   codec.count(request)))])
    finally:
        forwarder.close()


def prometheus_raw(url: str, selector: str) -> dict[tuple, list[tuple[int, float]]]:
    answer = requests.get(f"{url}/api/v1/query", params={"query": f"{selector}[1h]", "time": time.time()},
                          timeout=30).json()
    return {tuple(sorted(r["metric"].items())): [(round(float(t) * 1000), float(v)) for t, v in r["values"]]
            for r in answer["data"]["result"]}


def test_victoria_metrics_keeps_out_of_order_samples(victoria):
    labels = {"__name__": "ooo_total", "job": "behaviour"}
    assert forward(victoria, [Series(labels, [(BASE_MS + 2000, 2.0)])]) == []
    assert forward(victoria, [Series(labels, [(BASE_MS + 1000, 1.0)])]) == []  # older than what it holds
    wait_for(lambda: sum(len(v) for v in vm_export(victoria, "ooo_total").values()) == 2, 30, "both samples")
    assert list(vm_export(victoria, "ooo_total").values()) == [[(BASE_MS + 1000, 1.0), (BASE_MS + 2000, 2.0)]]


@pytest.mark.parametrize("store", ["victoria", "prometheus"])
def test_single_node_stores_ignore_the_tenant_header(store, request):
    """Tenants routed from a label reach a single-node store as X-Scope-OrgID, which it ignores: every
    tenant's series land in the one store (multi-tenant stores such as Mimir/Cortex separate them)."""
    url = request.getfixturevalue(store)
    series = [Series({"__name__": "tenant_probe", "team": team, "job": "behaviour"}, [(BASE_MS, float(n))])
              for n, team in enumerate(["team-a", "team-b"])]
    assert forward(url, series, tenant_label="team") == []
    if store == "victoria":
        wait_for(lambda: len(vm_export(url, "tenant_probe")) == 2, 30, "both tenants' series")
        stored = {dict(k)["team"]: v for k, v in vm_export(url, "tenant_probe").items()}
    else:
        stored = {dict(k)["team"]: v for k, v in prometheus_raw(url, "tenant_probe").items()}
    assert stored == {"team-a": [(BASE_MS, 0.0)], "team-b": [(BASE_MS, 1.0)]}
