"""Errors the codec raises, each carrying the HTTP status a receiver must answer with.

Invalid data is always a 4xx: a 5xx would make Prometheus retry the same bad request forever.
"""

from __future__ import annotations


class RemoteWriteError(Exception):
    """A request that can never succeed as sent."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidPayload(RemoteWriteError):
    """Bad snappy, bad protobuf, or series that break the spec (400)."""

    status = 400


class PayloadTooLarge(RemoteWriteError):
    """Body or decompressed body over a configured cap, or a series too big to publish (413)."""

    status = 413


class UnsupportedMediaType(RemoteWriteError):
    """Unknown Content-Type, proto message or Content-Encoding (415)."""

    status = 415
