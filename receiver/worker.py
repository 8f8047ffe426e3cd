"""gunicorn worker: an event loop reads each request whole before a thread runs the app.

gunicorn's `gthread` worker hands a connection to a pool thread, which then reads the headers and
body itself, so a few hundred connections trickling bytes hold every thread and valid writers wait.
Here one asyncio loop per worker process parses requests (httptools: llhttp, in C) and buffers
their bodies; only a complete request takes one of `--threads` threads to run the Flask app.

- Each request must arrive whole (headers and body) within --body-read-timeout: past it, a request
  whose headers arrived goes to the app with a body that raises `BodyTimeout` (408); one without
  headers is answered 408 here. Either way the connection is closed.
- Bodies are buffered up to --max-body-bytes + 1 (the app answers 413 past the limit) and, across all
  connections of the worker, up to --max-buffered-bytes: beyond it the request gets 503 + Retry-After.
- Malformed framing (bad chunking, a body cut short by the client) reaches the app as a body that
  raises `MalformedBody`, so every status code is still decided in one place: receiver/views.py.
- Idle keep-alive connections are closed after gunicorn's --keepalive seconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote_to_bytes

import httptools
from gunicorn.sock import ssl_context
from gunicorn.workers.base import Worker

from receiver.body import BodyTimeout, MalformedBody
from receiver.publisher import Unavailable

HEARTBEAT_SECONDS = 1.0
REASONS = {400: "Bad Request", 408: "Request Timeout", 500: "Internal Server Error"}  # the answers made here


class BufferedInput(io.RawIOBase):
    """wsgi.input over a buffered body; `error`, when set, is raised once the buffered bytes are read."""

    def __init__(self, body: bytes, error: BaseException | None = None) -> None:
        self._body = memoryview(body)
        self._offset = 0
        self._error = error

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        left = len(self._body) - self._offset
        if left == 0 and self._error is not None:
            raise self._error
        size = left if size is None or size < 0 else min(size, left)
        chunk = self._body[self._offset:self._offset + size].tobytes()
        self._offset += size
        return chunk

    def readline(self, size: int = -1) -> bytes:  # WSGI requires it; the receiver never calls it
        return self.read(size)


class BufferBudget:
    """Bytes of bodies being received by one worker, at most `limit`; used only from its event loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def release(self, size: int) -> None:
        self.used -= size


class _Request:
    __slots__ = ("url", "headers", "body", "error", "keep_alive", "method", "version")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.error: BaseException | None = None
        self.keep_alive = True
        self.method = b"GET"
        self.version = "1.1"


class _Connection(asyncio.Protocol):
    """One client connection: parse, buffer, run each complete request in order, write its answer."""

    def __init__(self, worker: BufferedWorker) -> None:
        self.worker = worker
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.request: _Request | None = None  # the one being received
        self.ready: collections.deque[_Request] = collections.deque()  # complete, waiting for the app
        self.current: _Request | None = None  # the one the app is running
        self.closing = False
        self.headers_done = False
        self.deadline: asyncio.TimerHandle | None = None
        self.idle: asyncio.TimerHandle | None = None
        self.buffered = 0  # this connection's share of the worker's buffered bytes

    # -- asyncio.Protocol --------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.worker.connections.add(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(MalformedBody("protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            self._fail(MalformedBody(f"malformed request: {exc}"))

    def eof_received(self) -> bool:
        # the client finished sending (it may still read): a request in progress was cut short
        if self.request is not None:
            self._fail(MalformedBody("the client closed the connection before the body ended"))
        return True  # keep the write side open for the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._cancel_timers()
        self.worker.connections.discard(self)
        # what is still being received or waiting is dropped; a running request releases its own body
        self._release(self.buffered - (len(self.current.body) if self.current is not None else 0))
        self.ready.clear()
        self.request = None

    # -- httptools callbacks -------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.request = _Request()
        self.headers_done = False
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        self.deadline = self.worker.loop.call_later(self.worker.body_read_timeout, self._timed_out)

    def on_url(self, url: bytes) -> None:
        assert self.request is not None
        self.request.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.request is not None
        self.request.headers.append((name, value))

    def on_headers_complete(self) -> None:
        request = self.request
        assert request is not None
        self.headers_done = True
        request.method = self.parser.get_method()
        request.version = self.parser.get_http_version()
        request.keep_alive = self.parser.should_keep_alive()
        headers = {name.lower(): value for name, value in request.headers}
        if headers.get(b"expect", b"").lower() == b"100-continue":
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.worker.max_body_bytes:
            self._complete(keep_alive=False)  # the app refuses it from the header alone (413)

    def on_body(self, chunk: bytes) -> None:
        request = self.request
        if request is None:  # already handed to the app (too large, or failed)
            return
        room = self.worker.max_body_bytes + 1 - len(request.body)
        if len(chunk) >= room:  # over the limit: the app reads limit + 1 bytes and answers 413
            self._buffer(request, chunk[:room])
            self._complete(keep_alive=False)
            return
        if not self._buffer(request, chunk):
            request.error = Unavailable(f"over --max-buffered-bytes ({self.worker.budget.limit}) of request "
                                        "bodies being received by this worker; retry")
            self._complete(keep_alive=False)

    def on_message_complete(self) -> None:
        if self.request is not None:
            self._complete(keep_alive=None)

    # -- receiving -----------------------------------------------------------------------------------------
    def _buffer(self, request: _Request, chunk: bytes) -> bool:
        if not self.worker.budget.reserve(len(chunk)):
            return False
        self.buffered += len(chunk)
        request.body += chunk
        return True

    def _release(self, size: int) -> None:
        self.worker.budget.release(size)
        self.buffered -= size

    def _complete(self, keep_alive: bool | None) -> None:
        """The request being received is whole (or will get no more): queue it for the app."""
        request, self.request = self.request, None
        assert request is not None
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if keep_alive is False:
            request.keep_alive = False
            self._stop_reading()
        self.ready.append(request)
        self._next()

    def _fail(self, error: BaseException) -> None:
        if self.request is not None and self.headers_done:
            self.request.error = error
            self._complete(keep_alive=False)
        elif not self.running and not self.ready:
            self._answer_here(400, str(error))
        else:
            self._stop_reading()

    def _timed_out(self) -> None:
        self.deadline = None
        timeout = f"request not received within --body-read-timeout of {self.worker.body_read_timeout:g}s"
        if self.request is not None and self.headers_done:
            self.request.error = BodyTimeout(timeout)
            self._complete(keep_alive=False)
        else:
            self._answer_here(408, timeout)

    def _stop_reading(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(RuntimeError, AttributeError):
                self.transport.pause_reading()

    # -- answering -----------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.current is not None

    def _next(self) -> None:
        if self.current is not None or not self.ready:
            return
        request = self.current = self.ready.popleft()
        future = self.worker.loop.run_in_executor(self.worker.executor, self.worker.call_app, request,
                                                  self._peer())
        future.add_done_callback(lambda done: self._answered(request, done))

    def _answered(self, request: _Request, done: asyncio.Future) -> None:
        self.current = None
        self._release(len(request.body))
        if done.exception() is not None:  # the app itself failed (Flask answers its own errors 500)
            self._answer_here(500, f"internal error: {type(done.exception()).__name__}")
            return
        status, headers, body = done.result()
        close = not request.keep_alive or self.closing or self.worker.stopping or any(
            name.lower() == "connection" and value.lower() == "close" for name, value in headers)
        self._write(serialize(status, headers, body, close, request.method == b"HEAD"))
        if close:
            self._close()
            return
        if self.ready:
            self._next()
        elif self.request is None:
            self._arm_idle()

    def _answer_here(self, status: int, message: str) -> None:
        body = json.dumps({"status": "error", "code": status, "error": message}).encode()
        self._write(serialize(f"{status} {REASONS.get(status, '')}", [("Content-Type", "application/json")],
                              body, True, False))
        self._close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        self.closing = True
        self._cancel_timers()
        if self.transport is not None:
            self.transport.close()

    def _arm_idle(self) -> None:
        self.idle = self.worker.loop.call_later(self.worker.keepalive, self._close)

    def _cancel_timers(self) -> None:
        for timer in (self.deadline, self.idle):
            if timer is not None:
                timer.cancel()
        self.deadline = self.idle = None

    def _peer(self) -> tuple[str, int]:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return (str(peer[0]), int(peer[1])) if peer else ("", 0)


def serialize(status: str, headers: list[tuple[str, str]], body: bytes, close: bool, head: bool) -> bytes:
    lines = [f"HTTP/1.1 {status}"]
    lines += [f"{name}: {value}" for name, value in headers
              if name.lower() not in ("content-length", "connection", "transfer-encoding")]
    code = status[:3]
    if code not in ("204", "304"):
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head_bytes if head or code in ("204", "304") else head_bytes + body


class BufferedWorker(Worker):
    """The receiver's gunicorn worker class (see the module docstring)."""

    def init_process(self) -> None:
        config = self.app.receiver_config  # the ReceiverServer that started us
        self.max_body_bytes: int = config.max_body_bytes
        self.budget = BufferBudget(config.max_buffered_bytes)
        self.body_read_timeout: float = config.body_read_timeout
        self.keepalive: float = float(self.cfg.keepalive or 5)
        self.stopping = False
        self.connections: set[_Connection] = set()
        super().init_process()

    def run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.executor = ThreadPoolExecutor(self.cfg.threads, thread_name_prefix="request")
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self.executor.shutdown(wait=True)
            self.loop.close()

    async def _serve(self) -> None:
        ssl = ssl_context(self.cfg) if self.cfg.is_ssl else None
        servers = [await self.loop.create_server(lambda: _Connection(self), sock=listener.sock, ssl=ssl,
                                                 backlog=self.cfg.backlog)
                   for listener in self.sockets]
        self.loop.add_reader(self.PIPE[0], self._drain_wakeup_pipe)  # signals wake the loop at once
        parent = self.ppid
        while self.alive and os.getppid() == parent:
            self.notify()
            await asyncio.sleep(HEARTBEAT_SECONDS)
        # graceful stop: no new connections, answer what is being handled, then close
        self.stopping = True
        for server in servers:
            server.close()
        deadline = self.loop.time() + self.cfg.graceful_timeout
        while self.loop.time() < deadline and any(c.running or c.ready for c in self.connections):
            self.notify()
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection._close()

    def _drain_wakeup_pipe(self) -> None:
        with contextlib.suppress(OSError):
            os.read(self.PIPE[0], 4096)

    def call_app(self, request: _Request, peer: tuple[str, int]) -> tuple[str, list[tuple[str, str]], bytes]:
        """Run the WSGI app on one complete request (in a pool thread)."""
        environ = self._environ(request, peer)
        answer: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
            answer[:] = [status, headers]
            return _no_write

        result = self.wsgi(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        return answer[0], answer[1], body

    def _environ(self, request: _Request, peer: tuple[str, int]) -> dict[str, Any]:
        path, _, query = request.url.partition(b"?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method.decode("latin-1"),
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query.decode("latin-1"),
            "SERVER_NAME": self.app.receiver_config.host,
            "SERVER_PORT": str(self.app.receiver_config.port),
            "SERVER_PROTOCOL": f"HTTP/{request.version}",
            "REMOTE_ADDR": peer[0],
            "REMOTE_PORT": str(peer[1]),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if self.cfg.is_ssl else "http",
            "wsgi.input": BufferedInput(bytes(request.body), request.error),
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        for raw_name, raw_value in request.headers:
            name = raw_name.decode("latin-1").upper().replace("-", "_")
            value = raw_value.decode("latin-1")
            if name == "CONTENT_TYPE" or name == "CONTENT_LENGTH":
                key = name
            elif name == "TRANSFER_ENCODING":
                continue
            else:
                key = "HTTP_" + name
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ


def _no_write(data: bytes) -> None:
    raise NotImplementedError("the receiver's views return their bodies")
