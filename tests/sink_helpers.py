"""Helpers shared by the sink tests: forward loops on fresh subscriptions, a capture server, reading
VictoriaMetrics back."""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from pipeline.forward_loop import ForwardLoop
from tools import services
from transforms.core.protocol import Protocol
from transforms.core.sink import config
from transforms.core.wire import codec

BASE_MS = (int(time.time()) - 600) * 1000  # ten minutes ago: inside Prometheus' head block, no look-ahead


@contextmanager
def forwarding(topic: str, sinks: list[config.SinkConfig], dead_letters: Path) -> Iterator[list[ForwardLoop]]:
    """One ForwardLoop per sink on its own fresh subscription of `topic` (created before publishing)."""
    stop = threading.Event()
    loops = []
    for sink in sinks:
        subscription = f"{topic.replace('/topics/', '/subscriptions/')}-{sink.name}"
        services.create_subscription(os.environ["PUBSUB_EMULATOR_HOST"], topic, subscription)
        loops.append(ForwardLoop(sink, subscription, str(dead_letters), stop))
    for loop in loops:
        loop.start()
    try:
        yield loops
    finally:
        stop.set()
        for loop in loops:
            loop.join(60)
            assert not loop.is_alive()


def sink(url: str, **flags) -> config.SinkConfig:
    return config.from_flags([url], **flags)[0]


def vm_export(url: str, match: str) -> dict[tuple, list[tuple[int, float | None]]]:
    """VictoriaMetrics' raw samples (/api/v1/export shows fresh data at once; stale markers as null)."""
    response = requests.get(f"{url}/api/v1/export", params={"match[]": match}, timeout=30)
    response.raise_for_status()
    out = {}
    for line in response.text.splitlines():
        # VictoriaMetrics writes infinities as bare +Inf/-Inf tokens, which JSON lacks
        row = json.loads(re.sub(r"(?<=[\[,])([+-])Inf(?=[,\]])", lambda m: "-Infinity" if m[1] == "-" else "Infinity",
                                line))
        key = tuple(sorted(row["metric"].items()))
        out[key] = sorted(zip(row["timestamps"], row["values"], strict=True))
    return out


def wait_for(check, timeout: float, what: str) -> None:
    services.wait_until(check, timeout, what, interval=0.5)


class Capture(http.server.BaseHTTPRequestHandler):
    """Records every request; answers from `answers`, then 204. Like a 2.0 receiver, a 2xx to a 2.0
    request reports what it carried in the *-Written headers, unless the answer sets its own."""

    answers: list[tuple[int, dict[str, str]]] = []
    seen: list[tuple[float, dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Capture.seen.append((time.monotonic(), dict(self.headers), body))
        status, headers = Capture.answers.pop(0) if Capture.answers else (204, {})
        if status < 300 and "proto=io.prometheus.write.v2" in self.headers.get("Content-Type", "") and not any(
                name.startswith("X-Prometheus-Remote-Write-") for name in headers):
            counts = codec.decode(body, Protocol.V2, 1 << 24).counts
            headers = {**headers, "X-Prometheus-Remote-Write-Samples-Written": str(counts.samples),
                       "X-Prometheus-Remote-Write-Histograms-Written": str(counts.histograms),
                       "X-Prometheus-Remote-Write-Exemplars-Written": str(counts.exemplars)}
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return
