"""Helpers for the fault tests: real processes killed for real (by PID), a TCP proxy we can cut,
and samples compared as sets so at-least-once duplicates are counted instead of failing a test."""

from __future__ import annotations

import collections
import contextlib
import math
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from tools import services
from tools.pubsub import Message
from tools.services import process_tree
from transforms.core.protocol import STALE_NAN, STALE_NAN_BITS, float_bits, is_stale_marker

# series key -> how often each (timestamp, value bits) was seen
Seen = dict[tuple, collections.Counter]


def value_bits(value: float) -> int:
    """A sample value's bits, every NaN but the stale marker as one (query APIs print NaN without its payload)."""
    if math.isnan(value) and not is_stale_marker(value):
        return float_bits(math.nan)
    return float_bits(value)


def outage_seconds(name: str, default: float) -> float:
    """A deliberate outage's length; `make chaos` lengthens it through the environment."""
    return float(os.environ.get(name, default))


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill9(service: services.Service) -> list[int]:
    """SIGKILL every process of a service, one PID at a time, and wait until none runs. Returns the PIDs."""
    pids = process_tree(service.pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    service.process.wait(10)  # reap our own child; its children are reparented and reaped by init
    services.wait_until(lambda: not any(running(pid) for pid in pids), 10, "every killed process to be gone")
    service.stop()  # closes its log; the group is already empty
    return pids


def seen_in_messages(messages: Iterable[Message]) -> Seen:
    """Every sample of every published remote-write 1.0 message, stale markers included."""
    seen: Seen = collections.defaultdict(collections.Counter)
    for message in messages:
        for ts in message.decode().message.timeseries:
            key = tuple(sorted((label.name, label.value) for label in ts.labels))
            seen[key].update((s.timestamp, value_bits(s.value)) for s in ts.samples)
    return seen


def compare(expected: dict[tuple, list[tuple[int, float]]], seen: Seen) -> tuple[list[str], int]:
    """(what is missing, how many duplicates were seen): every expected sample must be seen at least once."""
    missing = []
    for key, samples in expected.items():
        got = seen.get(key, collections.Counter())
        missing += [f"{dict(key)} @{t}={v}" for t, v in samples if (t, value_bits(v)) not in got]
    duplicates = sum(n - 1 for counter in seen.values() for n in counter.values() if n > 1)
    return missing, duplicates


def non_stale(seen: Seen) -> int:
    """Distinct samples that are not stale markers (Prometheus' queries never return those)."""
    return sum(1 for counter in seen.values() for _, bits in counter if bits != STALE_NAN_BITS)


class TcpProxy:
    """A TCP relay on a free loopback port to `target` that a test can cut (close the listener and every
    connection, so the far side is unreachable) and restore on the same port."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.port = services.free_port()
        self.address = f"{services.LOOPBACK}:{self.port}"
        self._up = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> TcpProxy:
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((services.LOOPBACK, self.port))
        listener.listen(128)
        self._listener = listener
        self._up.set()
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Refuse new connections and reset the open ones, as a dead host would."""
        self._up.clear()
        if self._listener:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        if self._thread:
            self._thread.join(5)
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while self._up.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while self._up.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.5)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                for sock in (a, b):
                    self._sockets.discard(sock)
                    with contextlib.suppress(OSError):
                        sock.close()


def start_pipeline(log_dir: Path, name: str, subscription: str, archive: Path, metrics_port: int,
                   extra: tuple[str, ...] = (), window: int = 5) -> services.Service:
    """`python -m pipeline` (local runner) as a real process; ready once its /-/ready answers 200."""
    import sys

    service = services.Service(name, [
        sys.executable, "-m", "pipeline", "--runner=DirectRunner", f"--input_subscription={subscription}",
        f"--archive_path={archive}", f"--window_size={window}", f"--metrics_port={metrics_port}", *extra],
        log_dir, env={"PUBSUB_EMULATOR_HOST": os.environ["PUBSUB_EMULATOR_HOST"]}, cwd=services.ROOT)
    url = f"http://{services.LOOPBACK}:{metrics_port}"
    return service.wait_ready(lambda: services.http_get(f"{url}/-/ready")[0] == 200, timeout=90)


class SteadyPublisher(threading.Thread):
    """Publishes remote-write requests to a topic at a steady pace, as the receiver would, until stopped
    or out of requests; `published` counts confirmed messages."""

    def __init__(self, topic: str, bodies: list[bytes], per_second: float) -> None:
        super().__init__(daemon=True, name="steady-publisher")
        self.topic, self.bodies, self.interval = topic, bodies, 1.0 / per_second
        self.published = 0
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from google.cloud import pubsub_v1

        from transforms.core.protocol import Protocol
        from transforms.core.wire import codec

        publisher = pubsub_v1.PublisherClient()
        try:
            next_at = time.monotonic()
            for body in self.bodies:
                if self.halt.is_set():
                    break
                decoded = codec.decode(body, Protocol.V1, 1 << 24)
                attributes = codec.message_attributes(Protocol.V1, "default", "2026-11-30T00:00:00.000Z",
                                                      decoded.counts)
                publisher.publish(self.topic, body, **attributes).result(timeout=60)
                self.published += 1
                next_at += self.interval
                self.halt.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # reported by the test through `error`
            self.error = exc
        finally:
            publisher.transport.close()

    def finish(self, timeout: float) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the publisher did not finish"
        assert self.error is None, f"publishing failed: {self.error!r}"


def fault_requests(tag: str, count: int, series: int, base_ms: int) -> list[bytes]:
    """`count` 1.0 bodies of `series` series each; request r's samples are at base_ms + r s, values unique."""
    from transforms.core.wire import codec
    from transforms.core.wire.builders import Series, build_v1

    return [codec.encode(build_v1([Series({"__name__": f"{tag}_metric", "job": "faults", "i": str(i)},
                                          [(base_ms + r * 1000, float(r * series + i))]) for i in range(series)]))
            for r in range(count)]


def expected_samples(tag: str, count: int, series: int, base_ms: int) -> dict[tuple, list[tuple[int, float]]]:
    return {(("__name__", f"{tag}_metric"), ("i", str(i)), ("job", "faults")):
            [(base_ms + r * 1000, float(r * series + i)) for r in range(count)] for i in range(series)}


def archive_seen(archive: Path) -> Seen:
    """The archive's samples (ordinary values only) as a Seen map."""
    from datetime import datetime

    from tools.archive import read_archive

    seen: Seen = collections.defaultdict(collections.Counter)
    for lines in read_archive(str(archive)).values():
        for line in lines:
            key = tuple(sorted({"__name__": line["name"], **line["tags"]}.items()))
            stamp = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
            value = (line.get("counter") or line.get("gauge"))["value"]
            if isinstance(value, str):  # "+Inf", "-Inf", "NaN", "NaN:0x...", "StaleNaN"
                value = STALE_NAN if value == "StaleNaN" else float(value.split(":")[0])
            seen[key][(round(stamp.timestamp() * 1000), value_bits(value))] += 1
    return seen


def vm_seen(vm_url: str, match: str) -> Seen:
    """VictoriaMetrics' raw samples of `match` as a Seen map (its export keeps duplicates it stored)."""
    from tests.sink_helpers import vm_export

    seen: Seen = collections.defaultdict(collections.Counter)
    for key, samples in vm_export(vm_url, match).items():
        seen[key].update((t, value_bits(float(v))) for t, v in samples if v is not None)
    return seen


def count(seen: Seen) -> int:
    return sum(sum(counter.values()) for counter in seen.values())
