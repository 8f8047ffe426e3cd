"""Hostile HTTP against the real receiver under gunicorn: malformed framing is a 4xx, slow bodies a 408.

Raw sockets, since well-behaved HTTP clients cannot send what these tests send.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from urllib.parse import urlparse

import pytest
import requests

from tools import services
from transforms.core.protocol import CONTENT_TYPE_V1
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1

V1 = {"Content-Type": CONTENT_TYPE_V1, "Content-Encoding": "snappy", "X-Prometheus-Remote-Write-Version": "0.1.0"}
HEAD = ("POST /api/v1/write HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/x-protobuf\r\n"
        "Content-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n")


@pytest.fixture
def receiver(log_dir, pubsub_emulator, topic_and_subscription, request):
    topic, subscription = topic_and_subscription
    args = getattr(request, "param", ())
    service, url = services.start_receiver(log_dir, pubsub_emulator, topic, args=args, name="receiver-hostile")
    try:
        yield url, subscription
    finally:
        service.stop()


def address(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname, parsed.port


def read_status(sock: socket.socket) -> int:
    """The status code of the first response on sock (reads until the status line is complete)."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed before a status line; got {data!r}")
        data += chunk
    return int(data.split(b" ", 2)[1])


def raw_exchange(url: str, raw: bytes, close_write: bool = False) -> int:
    with socket.create_connection(address(url), timeout=30) as sock:
        sock.sendall(raw)
        if close_write:  # the client gives up sending but still waits for the answer
            sock.shutdown(socket.SHUT_WR)
        return read_status(sock)


def chunked(body: bytes) -> bytes:
    return (HEAD + "Transfer-Encoding: chunked\r\n\r\n").encode() + body


GOOD = codec.encode(build_v1([Series({"__name__": "up", "job": "a"}, [(1_700_000_000_000, 1.0)])]))
MALFORMED_CHUNKED = [
    ("chunk size zz", chunked(b"zz\r\nhello\r\n0\r\n\r\n"), False),
    ("chunk size -1", chunked(b"-1\r\nhello\r\n0\r\n\r\n"), False),
    ("no final chunk, then close", chunked(b"%x\r\n" % len(GOOD) + GOOD + b"\r\n"), True),
    ("chunk cut short, then close", chunked(b"100\r\n" + GOOD), True),
    ("chunk without its CRLF", chunked(b"%x\r\n" % len(GOOD) + GOOD + b"XX0\r\n\r\n"), False),
]


def test_malformed_chunked_bodies_are_400_never_5xx(receiver):
    url, subscription = receiver
    for name, raw, close_write in MALFORMED_CHUNKED:
        assert raw_exchange(url, raw, close_write) == 400, name
    # a well-formed chunked body on the same receiver is still accepted
    assert raw_exchange(url, chunked(b"%x\r\n" % len(GOOD) + GOOD + b"\r\n0\r\n\r\n")) == 204
    text = requests.get(f"{url}/metrics", timeout=10).text
    assert not re.search(r'receiver_requests_total\{code="5\d\d"', text), text
    assert f'receiver_requests_total{{code="400",protocol="1.0"}} {len(MALFORMED_CHUNKED)}.0' in text, text
    [message] = subscription.drain(expect=1)
    assert message.data == GOOD


def test_a_body_shorter_than_its_content_length_is_400_and_not_published(receiver):
    """A complete, decodable body under a Content-Length that promises more, then the client closes its
    write side: the body was cut short, whatever it decodes to (found by make fuzz-http)."""
    url, subscription = receiver
    head = (HEAD + f"Content-Length: {len(GOOD) + 100}\r\n\r\n").encode()
    assert raw_exchange(url, head + GOOD, close_write=True) == 400
    assert raw_exchange(url, (HEAD + f"Content-Length: {len(GOOD)}\r\n\r\n").encode() + GOOD) == 204
    [message] = subscription.drain(expect=1)
    assert message.data == GOOD
    assert subscription.drain(quiet=1.0) == []


class SlowSender(threading.Thread):
    """Opens connections that announce a body and send it one byte at a time, reconnecting when cut.

    It records each status it gets; a slow sender never finishes a body on its own.
    """

    def __init__(self, url: str, stop: threading.Event, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.interval = url, stop, interval
        self.statuses: list[int] = []
        self.trickled = 0  # body bytes sent, to see that the attack is under way

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with socket.create_connection(address(self.url), timeout=60) as sock:
                    sock.sendall((HEAD + "Content-Length: 100000\r\n\r\n").encode())
                    sock.settimeout(self.interval)
                    while not self.stop.is_set():
                        try:
                            self.statuses.append(read_status(sock))
                            break  # answered: reconnect and start over
                        except TimeoutError:
                            sock.sendall(b"\x00")
                            self.trickled += 1
            except (OSError, AssertionError):
                self.stop.wait(self.interval)


@pytest.mark.parametrize("receiver", [("--body-read-timeout", "2")], indirect=True)
def test_more_slow_senders_than_threads_do_not_block_valid_writers(receiver, log_dir):
    """24 connections trickle bodies (2 workers x 8 threads = 16); valid writes still get through.

    Without a body deadline the slow senders hold every thread for as long as they keep sending.
    A real Prometheus writes meanwhile and must lose nothing.
    """
    from tests.prometheus_helpers import own_metrics, prometheus_config

    url, _ = receiver
    port = services.free_port()
    prometheus, prometheus_url = services.start_prometheus(
        log_dir, prometheus_config(url, port, f"127.0.0.1:{port}"), port=port, name="prometheus-slow-senders")
    stop = threading.Event()
    senders = [SlowSender(url, stop) for _ in range(24)]
    try:
        services.wait_until(lambda: own_metrics(prometheus_url).get("prometheus_remote_storage_samples_total", 0) > 0,
                            60, "Prometheus to send samples")
        for sender in senders:
            sender.start()
        # every slow sender holds a connection and is trickling before the valid writes start
        services.wait_until(lambda: all(sender.trickled >= 3 for sender in senders), 30, "slow senders")
        statuses = []
        for _ in range(5):
            response = requests.post(f"{url}/api/v1/write", data=GOOD, headers=V1, timeout=15)
            statuses.append(response.status_code)
        assert statuses == [204] * 5  # each waited at most about one body deadline for a thread
        sent_before = own_metrics(prometheus_url)["prometheus_remote_storage_samples_total"]
        services.wait_until(
            lambda: own_metrics(prometheus_url)["prometheus_remote_storage_samples_total"] > sent_before + 100,
            60, "Prometheus to keep sending during the slow-sender attack")
        # the writes above can finish inside one body deadline; wait until the deadline has cut every sender
        services.wait_until(lambda: all(sender.statuses for sender in senders), 60, "the body deadline to cut")
    finally:
        stop.set()
        for sender in senders:
            sender.join(10)
        metrics = own_metrics(prometheus_url)
        prometheus.stop()
    cut = [s for sender in senders for s in sender.statuses]
    assert cut and set(cut) == {408}, cut
    assert metrics["prometheus_remote_storage_samples_failed_total"] == 0
    assert metrics["prometheus_remote_storage_samples_total"] > 0


def realistic_body() -> bytes:
    """1000 series with hash-like pod labels: ~40 KiB compressed, what Prometheus sends per request."""
    body = codec.encode(build_v1([Series({"__name__": "w", "pod": hashlib.sha1(str(i).encode()).hexdigest()},
                                         [(1_700_000_000_000, 1.0)]) for i in range(1000)]))
    assert 30_000 < len(body) < 60_000, len(body)
    return body


class Tricklers(threading.Thread):
    """`count` connections that never finish a request: half trickle their headers, half their body.

    One thread sends a byte on each connection every `interval` seconds, as a slow-loris attack does.
    """

    def __init__(self, url: str, count: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.url, self.count, self.interval = url, count, interval
        self.stop = threading.Event()
        self.opened = threading.Event()
        self.sockets: list[socket.socket] = []

    def run(self) -> None:
        for n in range(self.count):
            sock = socket.create_connection(address(self.url), timeout=5)
            start = HEAD.encode()[:20] if n % 2 else (HEAD + "Content-Length: 100000\r\n\r\n").encode()
            sock.sendall(start)
            self.sockets.append(sock)
        self.opened.set()
        while not self.stop.wait(self.interval):
            for sock in self.sockets:
                try:
                    sock.send(b"\x00")
                except OSError:
                    pass  # cut by the receiver's deadline: what the test expects of some of them

    def close(self) -> None:
        self.stop.set()
        self.join(10)
        for sock in self.sockets:
            sock.close()


def test_256_slow_connections_hold_no_thread_valid_writers_answered_at_once(receiver):
    """256 connections trickle headers or bodies (2 workers x 8 threads = 16): each worker's event loop
    buffers them, so 100 valid writes meanwhile are all answered 204 long before the 10 s deadline."""
    url, subscription = receiver
    tricklers = Tricklers(url, 256)
    tricklers.start()
    try:
        assert tricklers.opened.wait(60), "the slow connections did not open"
        body = realistic_body()
        seconds = []
        with requests.Session() as session:
            for _ in range(100):
                response = session.post(f"{url}/api/v1/write", data=body, headers=V1, timeout=5)
                assert response.status_code == 204, response.text
                seconds.append(response.elapsed.total_seconds())
        seconds.sort()
        print(f"valid writes among 256 slow connections: p50 {seconds[49]:.3f} s, p99 {seconds[98]:.3f} s")
        assert seconds[98] < 5  # a held thread would have made some wait for the 10 s deadline
    finally:
        tricklers.close()
    assert len(subscription.drain(expect=100)) == 100


@pytest.mark.parametrize("receiver", [("--workers", "1", "--max-body-bytes", "100000",
                                       "--max-buffered-bytes", "100000")], indirect=True)
def test_bodies_being_received_are_capped_per_worker_503_beyond(receiver):
    """A worker buffers at most --max-buffered-bytes of bodies still arriving; a body that would take
    more is answered 503 + Retry-After, and writes succeed again once the buffer has room."""
    url, subscription = receiver
    body = realistic_body()
    # the one worker holds 90 % of its buffer with a body that never ends
    holder = socket.create_connection(address(url), timeout=5)
    try:
        holder.sendall((HEAD + "Content-Length: 100000\r\n\r\n").encode() + b"\x00" * 90_000)
        statuses = {requests.post(f"{url}/api/v1/write", data=body, headers=V1, timeout=5).status_code
                    for _ in range(6)}
        assert statuses == {503}, statuses
        refused = requests.post(f"{url}/api/v1/write", data=body, headers=V1, timeout=5)
        assert refused.headers["Retry-After"] == "1" and "max-buffered-bytes" in refused.json()["error"]
    finally:
        holder.close()
    services.wait_until(lambda: requests.post(f"{url}/api/v1/write", data=body, headers=V1, timeout=5).ok,
                        30, "a write once the buffer has room")
    assert [m.data for m in subscription.drain(expect=1)] == [body]
