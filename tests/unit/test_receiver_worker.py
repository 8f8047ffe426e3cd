"""The receiver's worker without gunicorn: parsing, buffering and its byte accounting, on a real event loop."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from receiver.body import MalformedBody, read_body
from receiver.publisher import Unavailable
from receiver.worker import BufferBudget, BufferedInput, _Connection, serialize
from transforms.core.errors import RemoteWriteError


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 5000) if name == "peername" else default


class FakeWorker:
    """What _Connection needs of BufferedWorker; the app echoes what it read (or the error it got)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_body: int = 1000, max_buffered: int = 10_000) -> None:
        self.loop = loop
        self.executor = ThreadPoolExecutor(2)
        self.max_body_bytes, self.budget = max_body, BufferBudget(max_buffered)
        self.body_read_timeout, self.keepalive = 5.0, 5.0
        self.stopping = False
        self.connections: set = set()
        self.release_app = threading.Event()
        self.release_app.set()

    def call_app(self, request, peer):
        self.release_app.wait(5)
        stream = BufferedInput(bytes(request.body), request.error)
        try:
            body = read_body(stream, self.max_body_bytes)
        except (RemoteWriteError, Unavailable) as exc:
            return "400 Bad Request", [], type(exc).__name__.encode()
        return "200 OK", [("X-Len", str(len(body)))], body


def run(coroutine):
    return asyncio.new_event_loop().run_until_complete(coroutine)


async def settle(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.01)


def request(body: bytes, extra: str = "") -> bytes:
    return (f"POST /api/v1/write HTTP/1.1\r\nHost: r\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def test_a_request_is_answered_once_whole_and_its_bytes_are_released():
    async def scenario():
        worker = FakeWorker(asyncio.get_running_loop())
        connection, transport = _Connection(worker), FakeTransport()
        connection.connection_made(transport)
        data = request(b"x" * 300)
        connection.data_received(data[:100])  # headers and part of the body: nothing runs yet
        assert connection.current is None and worker.budget.used > 0
        connection.data_received(data[100:])
        await settle(lambda: b"X-Len: 300" in transport.written)
        assert worker.budget.used == 0 and not transport.closed  # keep-alive
        connection.connection_lost(None)

    run(scenario())


def test_a_lost_connection_releases_what_it_buffered_without_double_counting_the_running_request():
    async def scenario():
        worker = FakeWorker(asyncio.get_running_loop())
        worker.release_app.clear()  # the app is slow: the first request stays running
        connection, transport = _Connection(worker), FakeTransport()
        connection.connection_made(transport)
        connection.data_received(request(b"a" * 200) + request(b"b" * 300)[:150])
        await settle(lambda: connection.current is not None)
        connection.connection_lost(None)
        assert worker.budget.used == 200  # only the running request's body is still held
        worker.release_app.set()
        await settle(lambda: connection.current is None)
        assert worker.budget.used == 0

    run(scenario())


def test_over_the_body_limit_the_app_gets_limit_plus_one_bytes_and_the_connection_closes():
    async def scenario():
        worker = FakeWorker(asyncio.get_running_loop(), max_body=100)
        connection, transport = _Connection(worker), FakeTransport()
        connection.connection_made(transport)
        connection.data_received(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n" + b"z" * 256)
        await settle(lambda: transport.closed)
        assert transport.written.endswith(b"PayloadTooLarge")  # read_body saw limit + 1 bytes
        assert transport.paused and worker.budget.used == 0

    run(scenario())


def test_past_the_worker_buffer_cap_the_app_gets_unavailable():
    async def scenario():
        worker = FakeWorker(asyncio.get_running_loop(), max_body=1000, max_buffered=500)
        holder, other = _Connection(worker), _Connection(worker)
        holder.connection_made(FakeTransport())
        transport = FakeTransport()
        other.connection_made(transport)
        holder.data_received(request(b"h" * 900)[:450])  # 450 of the 500 held by a body still arriving
        other.data_received(request(b"o" * 300))
        await settle(lambda: transport.closed)
        assert b"Unavailable" in transport.written
        holder.connection_lost(None)
        assert worker.budget.used == 0

    run(scenario())


def test_broken_framing_after_the_headers_reaches_the_app_as_a_malformed_body():
    async def scenario():
        worker = FakeWorker(asyncio.get_running_loop())
        connection, transport = _Connection(worker), FakeTransport()
        connection.connection_made(transport)
        connection.data_received(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n")
        await settle(lambda: transport.closed)
        assert b"InvalidPayload" in transport.written

    run(scenario())


def test_buffered_input_yields_its_bytes_then_raises_its_error():
    stream = BufferedInput(b"abcdef", MalformedBody("cut"))
    assert stream.read(4) == b"abcd" and stream.read() == b"ef"
    with pytest.raises(MalformedBody):
        stream.read(1)
    assert BufferedInput(b"").read() == b""


def test_serialized_answers_frame_their_bodies():
    ok = serialize("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "99")], b"hi", False, False)
    assert ok == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
    empty = serialize("204 No Content", [], b"", True, False)
    assert empty == b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
