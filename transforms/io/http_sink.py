"""The HTTP service of a sink (urllib3): one POST, its outcome for the retry policy, and its latency.

One thread-safe urllib3 pool per sink keeps a connection per shard alive. urllib3 rather than
requests (which is built on it): requests re-reads the proxy environment, netrc and CA paths on every
call, which cost more CPU than the rest of the POST; here the proxy environment is read once. Auth is
applied to each attempt just before it is sent; credentials that cannot be had make the attempt a final
failure (dead letters), never a retry loop.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from urllib.parse import urlsplit

import certifi
import urllib3

from transforms.core.protocol import parse_written
from transforms.core.retry import Attempt, classify
from transforms.core.sink.auth import SigV4Auth
from transforms.core.sink.config import SinkConfig
from transforms.io.sink_auth import SinkAuthError, authorize, aws_credentials

MAX_ANSWER = 2000  # characters of the sink's answer kept for logs and dead letters
PROBE_SECONDS = 3.0


def unreachable(url: str, timeout: float = PROBE_SECONDS) -> str | None:
    """Why a sink's host takes no TCP connection (refused, no such host, no answer), or None when it does.

    A connect, not a request: many stores answer GET on the write URL with 405, and a POST would write.
    """
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except socket.gaierror as exc:
        return f"unknown host {parts.hostname!r} ({exc.strerror})"
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def pool_for(url: str, connections: int, timeout: float) -> urllib3.PoolManager:
    """A connection pool for `url`'s host, through the proxy the environment names (as requests would)."""
    options = {"num_pools": 4, "maxsize": connections, "block": False, "retries": False,
               "timeout": urllib3.Timeout(total=timeout), "ca_certs": certifi.where()}
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return urllib3.ProxyManager(proxy, **options)
    return urllib3.PoolManager(**options)


class HttpService:
    def __init__(self, sink: SinkConfig) -> None:
        self.sink = sink
        self._pool = pool_for(sink.url, max(4, sink.queue.shards), sink.timeout)
        self._credentials_lock = threading.Lock()
        self._aws_credentials = None  # resolved once, at the first SigV4 request; they refresh themselves

    def _credentials(self):
        if not isinstance(self.sink.auth, SigV4Auth):
            return None
        with self._credentials_lock:
            if self._aws_credentials is None:
                self._aws_credentials = aws_credentials(self.sink.auth)
            return self._aws_credentials

    def post(self, body: bytes, headers: dict[str, str], points: int = 0) -> Attempt:
        started = time.monotonic()
        try:
            signed = authorize(self.sink.auth, self.sink.url, body, headers, credentials=self._credentials())
        except SinkAuthError as exc:  # classified as not transient: a final failure, dead-lettered with this reason
            return Attempt(classify(None, exc), str(exc)[:MAX_ANSWER], time.monotonic() - started)
        try:
            response = self._pool.request("POST", self.sink.url, body=body, headers=signed, redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            return Attempt(classify(None, exc), f"{type(exc).__name__}: {exc}"[:MAX_ANSWER],
                           time.monotonic() - started)
        answer = response.data[:4 * MAX_ANSWER].decode("utf-8", "replace")[:MAX_ANSWER]
        return Attempt(classify(response.status, None, response.headers), answer, time.monotonic() - started,
                       written=parse_written(response.headers))

    def get(self, url: str) -> int:
        return self._pool.request("GET", url, redirect=False).status
