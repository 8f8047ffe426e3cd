"""The pipeline's readiness rule and its metrics server, without Pub/Sub."""

from __future__ import annotations

import json
from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from pipeline.metrics import Readiness, StatusServer
from tools import services
from transforms.core.buckets import Buckets
from transforms.io.pubsub import PullStats


def loop(subscription: str, answered: int) -> SimpleNamespace:
    return SimpleNamespace(subscription=subscription, pull_stats=PullStats(answered=answered))


def test_ready_only_after_the_subscriptions_are_checked_and_every_loop_pulled_once():
    ready = Readiness()
    assert "checking" in (ready() or "")
    ready.archive, ready.sinks = loop("in", 1), [loop("in-vm", 0)]  # type: ignore[assignment]
    ready.subscriptions_checked = True
    assert ready() == "no successful pull yet from in-vm"
    ready.sinks[0].pull_stats.answered = 1
    assert ready() is None


def test_the_server_answers_503_until_ready_and_404_elsewhere():
    state = {"reason": "warming up"}
    server = StatusServer(0, CollectorRegistry(), lambda: state["reason"])
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        status, body = services.http_get(f"{url}/-/healthy")
        assert (status, json.loads(body)) == (200, {"status": "healthy"})  # as the receiver answers
        status, body = services.http_get(f"{url}/-/ready")
        assert (status, json.loads(body)) == (503, {"status": "not ready", "error": "warming up"})
        state["reason"] = None
        assert services.http_get(f"{url}/-/ready") == (200, b'{"status": "ready"}\n')
        assert services.http_get(f"{url}/nope")[0] == 404
        assert services.http_get(f"{url}/metrics")[0] == 200
    finally:
        server.stop()


def test_buckets_are_cumulative_with_inf_last():
    buckets = Buckets((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 7.0):
        buckets.observe(seconds)
    cumulative, total = buckets.cumulative()
    assert cumulative == [(0.1, 2), (1.0, 3), (float("inf"), 4)] and total == 7.65
