"""Helpers shared by the forwarder's unit tests: the Python path every request once took whole, and a sink
service that captures bodies without a network."""

from __future__ import annotations

from transforms.core.protocol import MAX_DECOMPRESSED, Protocol
from transforms.core.retry import Attempt, classify
from transforms.core.sink.builder import RequestBuilder
from transforms.core.sink.config import SinkConfig
from transforms.core.wire import codec, snappy_block
from transforms.io.sink_driver import Forwarder, SinkService, wall_clock

URL = "http://127.0.0.1:9/api/v1/write"


class PythonBuilder(RequestBuilder):
    """The request builder as it was: every message through upb and per-series Python."""

    def shard_message(self, data, attributes, batches):
        protocol = Protocol(attributes["protocol"])
        payload = snappy_block.decompress(data, MAX_DECOMPRESSED)
        return self.shard_parsed(payload, codec.parse(payload, protocol), protocol, attributes["tenant"], batches)


def PythonPath(sink: SinkConfig, *, service: SinkService) -> Forwarder:  # noqa: N802 (stands where a class does)
    return Forwarder(sink, service=service, builder=PythonBuilder(sink, clock=wall_clock))


class Capture:
    """Answers 2xx (with 2.0's *-Written counts when asked), or 400 to any body holding the label value "bad"."""

    def __init__(self, written: bool) -> None:
        self.written = written
        self.bodies: list[tuple[str, bytes]] = []

    def post(self, body: bytes, headers: dict[str, str], points: int = 0) -> Attempt:
        raw = snappy_block.decompress(body, MAX_DECOMPRESSED)
        self.bodies.append((headers["Content-Type"], raw))
        status = 400 if b"\x03bad" in raw else 200
        return Attempt(classify(status, None), f"answer {status}", 0.001, (0, 0, 0) if self.written else None)
