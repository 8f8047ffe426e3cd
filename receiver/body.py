"""Reading a request body: bounded in size, malformed framing a 400, too slow a 408.

The receiver's gunicorn worker (receiver/worker.py) buffers each body in its event loop before the
app runs, so a slow sender never holds a thread; what went wrong on the wire (a deadline passed,
framing broke, the client closed early) reaches the app as an error raised by the body stream, and
is mapped to a status code here and in receiver/views.py only.
"""

from __future__ import annotations

from typing import IO

from werkzeug.exceptions import ClientDisconnected

from transforms.core.errors import InvalidPayload, PayloadTooLarge, RemoteWriteError

_READ_SIZE = 1 << 20


class BodyTimeout(RemoteWriteError):
    """The request did not arrive within --body-read-timeout (408)."""

    status = 408


class MalformedBody(Exception):
    """The body's framing broke: bad chunking, a body cut short by the client, garbage after the headers."""


def read_body(stream: IO[bytes], limit: int, declared: int | None = None) -> bytes:
    """Read at most limit bytes; longer is 413 (never truncated), malformed framing 400.
    With a declared Content-Length, fewer bytes is a body cut short (400): a cut body can still decode."""
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := stream.read(min(limit + 1 - size, _READ_SIZE)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
    except (MalformedBody, ClientDisconnected, OSError) as exc:
        raise InvalidPayload(f"malformed or truncated request body: {exc}".strip()) from exc
    if declared is not None and size < declared:
        raise InvalidPayload(f"request body cut short: {size} of the {declared} bytes of its Content-Length")
    return b"".join(chunks)
