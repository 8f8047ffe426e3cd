"""Reading a request body off the wire: bounded in size and in time, malformed framing is a 4xx.

Under gunicorn's gthread worker each request holds one of `--threads` threads while its body
arrives. A client that sends its body slowly would hold that thread for as long as it likes, so
every body read has a deadline (--body-read-timeout): a watchdog thread shuts the socket's read
side when it passes, which wakes the blocked read at once, and the request is answered 408.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

from werkzeug.exceptions import ClientDisconnected

from transforms.core.errors import InvalidPayload, PayloadTooLarge, RemoteWriteError

try:  # gunicorn's framing errors (bad chunk size, missing last chunk, ...); absent under other servers
    from gunicorn.http.errors import NoMoreData, ParseException

    _FRAMING_ERRORS: tuple[type[BaseException], ...] = (ParseException, NoMoreData)
except ImportError:  # pragma: no cover - gunicorn is a dependency; Flask's test client needs none
    _FRAMING_ERRORS = ()

log = logging.getLogger(__name__)

_READ_SIZE = 1 << 20


class BodyTimeout(RemoteWriteError):
    """The body did not arrive within --body-read-timeout (408)."""

    status = 408


class BodyDeadlines:
    """One watchdog thread per app: shuts the read side of sockets whose body read ran out of time.

    shutdown(SHUT_RD) makes a blocked recv() return end-of-file at once, while the socket can still
    send the 408. Each entry is a (deadline, sequence, socket, expired flag) on a heap.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any, threading.Event]] = []
        self._sequence = itertools.count()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None

    def _ensure_thread(self) -> None:
        # started lazily, in the gunicorn worker (after fork), never in the master
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="body-deadlines", daemon=True)
            self._thread.start()

    @contextlib.contextmanager
    def watch(self, sock: Any, timeout: float) -> Iterator[threading.Event]:
        """While the block runs, shut sock's read side after timeout seconds; yields the 'expired' flag."""
        expired = threading.Event()
        if sock is None:  # not under gunicorn (Flask's test client): nothing to cut
            yield expired
            return
        entry = (time.monotonic() + timeout, next(self._sequence), sock, expired)
        with self._wakeup:
            self._ensure_thread()
            heapq.heappush(self._heap, entry)
            self._wakeup.notify()
        try:
            yield expired
        finally:
            with self._wakeup:
                with contextlib.suppress(ValueError):
                    self._heap.remove(entry)
                    heapq.heapify(self._heap)

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._wakeup.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, sock, expired = heapq.heappop(self._heap)
                expired.set()
                # under the lock, so a request that just finished (and left watch()) is never cut;
                # socket.socket's own shutdown: ssl.SSLSocket.shutdown would also drop the TLS state
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RD)


def read_body(stream: IO[bytes], limit: int, expired: threading.Event, timeout: float,
              declared: int | None = None) -> bytes:
    """Read at most limit bytes; longer is 413 (never truncated), malformed framing 400, too slow 408.
    With a declared Content-Length, fewer bytes before the client closed is a body cut short (400):
    gunicorn's reader ends quietly at end-of-file, and a cut body can still decode."""
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := stream.read(min(limit + 1 - size, _READ_SIZE)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
    except (*_FRAMING_ERRORS, ClientDisconnected, OSError) as exc:
        if expired.is_set():
            raise BodyTimeout(f"body not received within --body-read-timeout of {timeout:g}s") from exc
        raise InvalidPayload(f"malformed or truncated request body: {type(exc).__name__} {exc}".strip()) from exc
    if expired.is_set():  # the cut read looked like a clean end of a body of unknown length
        raise BodyTimeout(f"body not received within --body-read-timeout of {timeout:g}s")
    if declared is not None and size < declared:
        raise InvalidPayload(f"request body cut short: {size} of the {declared} bytes of its Content-Length")
    return b"".join(chunks)
