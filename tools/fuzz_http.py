"""`make fuzz-http`: mutated remote-write requests sent to the receiver over raw HTTP/1.1.

Bodies (valid 1.0/2.0 requests, then bit flips before and after snappy, truncation, splices, lying
snappy length headers, gzip, garbage, empty) and headers (content types, encodings, version headers,
hostile or repeated X-Scope-OrgID values) are mutated together with the framing: honest or lying
Content-Length (shorter; longer with the write side closed, so the receiver sees the body cut short),
chunked bodies with valid and malformed framing, both or neither. Every request goes on its own
connection with a deadline, so a hang is seen as one.

What must hold: no 5xx but 503, no hang, the gunicorn worker PIDs unchanged, and the messages in
Pub/Sub equal the 2xx answers (every 2xx to a non-empty body published exactly once, byte for byte).

    python -m tools.fuzz_http --requests 1000000 [--processes 2] [--seed 1]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gzip
import hashlib
import multiprocessing
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

from transforms.core.protocol import CONTENT_TYPE_V1, CONTENT_TYPE_V2
from transforms.core.wire import snappy_block
from transforms.core.wire.builders import Series, build_v1, build_v2

DEADLINE_SECONDS = 30.0  # per request; beyond it the receiver is hanging
TENANTS = [b"team-a", b"", b".", b"..", b"a" * 150, b"a" * 151, b"a/b", b"\xc3\xa4", b"\xff\xfe", b"a b",
           b"../../etc/passwd", b"*", b"()!'_.-", b"x" * 8000, b"%00", b"default", b"\t team-b \t"]
CONTENT_TYPES = [CONTENT_TYPE_V1.encode(), CONTENT_TYPE_V2.encode(),
                 b"application/x-protobuf;proto=prometheus.WriteRequest", b"application/x-protobuf;proto=bogus",
                 b"text/plain", b"application/json", b"", b"\xff" * 10,
                 b"application/x-protobuf; proto=io.prometheus.write.v2.Request; charset=utf-8",
                 b"APPLICATION/X-PROTOBUF", b"a" * 5000]
ENCODINGS = [b"snappy", b"snappy", b"gzip", b"identity", b"SNAPPY", b"snappy, gzip", b"", b"zstd", b"\x00"]
VERSIONS = [b"0.1.0", b"2.0.0", b"", b"9.9.9", b"\xff"]


@dataclasses.dataclass
class Outcome:
    """Totals from one fuzzing process."""

    statuses: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    published: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # sha256 of 2xx bodies
    empty_accepted: int = 0
    hangs: list[str] = dataclasses.field(default_factory=list)
    server_errors: list[str] = dataclasses.field(default_factory=list)  # 5xx other than 503

    def add(self, other: Outcome) -> None:
        self.statuses.update(other.statuses)
        self.published.update(other.published)
        self.empty_accepted += other.empty_accepted
        self.hangs += other.hangs
        self.server_errors += other.server_errors


def seed_bodies(rng: random.Random) -> list[tuple[bytes, bytes]]:
    """Valid (protobuf, content type) pairs the mutations start from."""
    def series(n: int) -> list[Series]:
        return [Series({"__name__": f"fuzz_{rng.randrange(50)}", "job": "fuzz", "i": str(i)},
                       [(1_796_000_000_000 + rng.randrange(10**6), rng.random() * 100)],
                       exemplars=[({"trace_id": "abc"}, 1_796_000_000_000, 1.0)] if i == 0 else ())
                for i in range(n)]

    v1 = CONTENT_TYPE_V1.encode()
    v2 = CONTENT_TYPE_V2.encode()
    return [(build_v1(series(rng.randrange(1, 30))).SerializeToString(), v1),
            (build_v1(series(3), metadata=[Series({"__name__": "fuzz_1"}, metric_type="counter")]).SerializeToString(),
             v1),
            (build_v1([], metadata=[Series({"__name__": "fuzz_2"}, metric_type="gauge")]).SerializeToString(), v1),
            (build_v2(series(rng.randrange(1, 30))).SerializeToString(), v2),
            (b"", v1)]


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    data = bytearray(data)
    choice = rng.random()
    if choice < 0.5:  # flip a few bytes
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif choice < 0.7:  # truncate
        del data[rng.randrange(len(data)):]
    elif choice < 0.85:  # splice a slice in somewhere else
        start = rng.randrange(len(data))
        piece = data[start:start + rng.randrange(1, 64)]
        at = rng.randrange(len(data) + 1)
        data[at:at] = piece
    else:  # insert garbage
        at = rng.randrange(len(data) + 1)
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 32)))
    return bytes(data)


def make_body(rng: random.Random, seeds: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    """(body, the content type that matches its seed)."""
    proto, content_type = rng.choice(seeds)
    choice = rng.random()
    if choice < 0.2:
        return snappy_block.compress(proto), content_type  # valid
    if choice < 0.5:
        return snappy_block.compress(mutate_bytes(rng, proto)), content_type  # reaches the protobuf parser
    if choice < 0.75:
        return mutate_bytes(rng, snappy_block.compress(proto)), content_type  # reaches snappy
    if choice < 0.82:  # a snappy length header that lies (huge, or off by some)
        body = snappy_block.compress(proto)
        varint = rng.choice([b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x80\x01", b"\x00", b"\x05"])
        return varint + body[1:], content_type
    if choice < 0.88:
        return gzip.compress(proto), content_type
    if choice < 0.95:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 512))), content_type
    return b"", content_type


def make_request(rng: random.Random, seeds: list[tuple[bytes, bytes]], path: bytes) -> tuple[bytes, bool, bytes | None]:
    """(raw request, close the write side after sending, the body the receiver reads or None if framing is bad)."""
    body, content_type = make_body(rng, seeds)
    headers = [b"Host: 127.0.0.1", b"User-Agent: fuzz-http", b"Connection: close"]
    if rng.random() < 0.85:
        headers.append(b"Content-Type: " + (content_type if rng.random() < 0.8 else rng.choice(CONTENT_TYPES)))
    if rng.random() < 0.9:
        headers.append(b"Content-Encoding: " + (b"snappy" if rng.random() < 0.8 else rng.choice(ENCODINGS)))
    if rng.random() < 0.8:
        headers.append(b"X-Prometheus-Remote-Write-Version: " + rng.choice(VERSIONS))
    for _ in range(0 if rng.random() < 0.5 else rng.choice((1, 1, 1, 2))):
        headers.append(b"X-Scope-OrgID: " + rng.choice(TENANTS))
    framing = rng.random()
    half_close = False
    effective: bytes | None = body
    if framing < 0.7:
        payload = body
        headers.append(b"Content-Length: %d" % len(body))
    elif framing < 0.82:  # chunked, valid
        payload = chunked(rng, body)
        headers.append(b"Transfer-Encoding: chunked")
    elif framing < 0.87:  # chunked with bad framing: cut before the last chunk, or a bad size line
        payload = chunked(rng, body)
        payload = payload[:-5] if rng.random() < 0.5 else b"zz\r\n" + payload
        headers.append(b"Transfer-Encoding: chunked")
        half_close, effective = True, None
    elif framing < 0.92:  # Content-Length lies short: the receiver reads only that much
        short = rng.randrange(len(body)) if body else 0
        payload = body
        headers.append(b"Content-Length: %d" % short)
        effective = body[:short]
    elif framing < 0.97:  # Content-Length lies long: the write side closes, the body is cut short
        payload = body
        headers.append(b"Content-Length: %d" % (len(body) + rng.randrange(1, 1000)))
        half_close, effective = True, None
    elif framing < 0.99:  # both: HTTP/1.1 says chunked wins, servers may refuse
        payload = chunked(rng, body)
        headers += [b"Content-Length: %d" % len(body), b"Transfer-Encoding: chunked"]
    else:  # neither: no body at all
        payload = b""
        effective = b""
    rng.shuffle(headers)
    raw = b"POST " + path + b" HTTP/1.1\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + payload
    return raw, half_close, effective


def chunked(rng: random.Random, body: bytes) -> bytes:
    out, at = [], 0
    while at < len(body):
        size = rng.randrange(1, 4096)
        piece = body[at:at + size]
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        at += size
    return b"".join(out) + b"0\r\n\r\n"


def send(host: str, port: int, raw: bytes, half_close: bool) -> int | None:
    """The status of the answer, 0 if the server closed without one; None if it hung past the deadline."""
    with socket.create_connection((host, port), timeout=DEADLINE_SECONDS) as sock:
        try:
            sock.sendall(raw)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before taking the whole body
            pass
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            return None
        except ConnectionResetError:
            pass
    if not answer.startswith(b"HTTP/1."):
        return 0
    return int(answer.split(b" ", 2)[1])


def fuzz(url: str, requests: int, seed: int) -> Outcome:
    """Send `requests` mutated requests (deterministic for a seed) and tally the answers."""
    host_port = url.split("://", 1)[1].rstrip("/")
    host, port = host_port.rsplit(":", 1)
    rng = random.Random(seed)
    outcome = Outcome()
    seeds = seed_bodies(rng)
    for n in range(requests):
        if n % 500 == 0:
            seeds = seed_bodies(rng)
        path = b"/api/v1/write" if rng.random() < 0.98 else rng.choice([b"/api/v1/write?x=1", b"/api/v1/write/",
                                                                         b"/%00", b"/" + b"a" * 3000])
        raw, half_close, effective = make_request(rng, seeds, path)
        status = send(host, int(port), raw, half_close)
        if status is None:
            outcome.hangs.append(f"seed {seed} request {n}")
            continue
        outcome.statuses[status] += 1
        if status >= 500 and status != 503:
            outcome.server_errors.append(f"seed {seed} request {n}: {status}")
        if 200 <= status < 300:
            if effective is None:
                outcome.server_errors.append(f"seed {seed} request {n}: {status} to a body with broken framing")
            elif effective and snappy_block.uncompressed_length(effective):
                outcome.published[hashlib.sha256(effective).hexdigest()] += 1
            else:
                outcome.empty_accepted += 1
    return outcome


def _run(args: tuple[str, int, int]) -> Outcome:
    return fuzz(*args)


def fuzz_parallel(url: str, requests: int, processes: int, seed: int) -> Outcome:
    """`requests` spread over `processes` sender processes, each with its own seed."""
    shares = [requests // processes + (1 if i < requests % processes else 0) for i in range(processes)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        outcomes = pool.map(_run, [(url, share, seed * 1000 + i) for i, share in enumerate(shares)])
    total = Outcome()
    for outcome in outcomes:
        total.add(outcome)
    return total


def published_in(subscription: str) -> collections.Counter:
    """sha256 of every message in the subscription (drained and acked)."""
    from tools.pubsub import Subscription

    found: collections.Counter = collections.Counter()
    with Subscription(subscription) as sub:
        for message in sub.drain(quiet=3.0, timeout=3600):
            found[hashlib.sha256(message.data).hexdigest()] += 1
    return found


def check(outcome: Outcome, in_pubsub: collections.Counter, workers_before: list[int],
          workers_after: list[int]) -> list[str]:
    """Every broken promise, in words; empty when the receiver held up."""
    problems = [f"hang: {h}" for h in outcome.hangs[:10]] + [f"5xx: {e}" for e in outcome.server_errors[:10]]
    if workers_before != workers_after:
        problems.append(f"gunicorn workers changed: {workers_before} -> {workers_after}")
    if in_pubsub != outcome.published:
        extra = sum((in_pubsub - outcome.published).values())
        lost = sum((outcome.published - in_pubsub).values())
        problems.append(f"Pub/Sub differs from the 2xx answers: {lost} answered 2xx but not published, "
                        f"{extra} published without a 2xx")
    return problems


def worker_pids(master: int) -> list[int]:
    from tools.services import process_tree

    return sorted(p for p in process_tree(master) if p != master)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=100_000, help="requests between Pub/Sub checks")
    args = parser.parse_args(argv)

    from tools import services

    log_dir = Path(tempfile.mkdtemp(prefix="fuzz-http-"))
    emulator, host = services.start_pubsub_emulator(log_dir)
    topic, subscription = "projects/fuzz/topics/fuzz", "projects/fuzz/subscriptions/fuzz"
    receiver = None
    try:
        services.create_topic_and_subscription(host, topic, subscription)
        receiver, url = services.start_receiver(log_dir, host, topic, name="receiver-fuzz")
        before = worker_pids(receiver.pid)
        started, done, problems = time.monotonic(), 0, []
        total = Outcome()
        while done < args.requests and not problems:
            batch = min(args.batch, args.requests - done)
            outcome = fuzz_parallel(url, batch, args.processes, args.seed + done)
            problems = check(outcome, published_in(subscription), before, worker_pids(receiver.pid))
            total.add(outcome)
            done += batch
            rate = done / (time.monotonic() - started)
            print(f"{done:,} requests ({rate:,.0f}/s): {dict(sorted(total.statuses.items()))}, "
                  f"{sum(total.published.values()):,} published = messages in Pub/Sub, "
                  f"{total.empty_accepted:,} empty accepted", flush=True)
        for problem in problems:
            print(f"FAIL {problem}")
        print("receiver log:", receiver.log_path)
        return 1 if problems else 0
    finally:
        if receiver:
            receiver.stop()
        emulator.stop()


if __name__ == "__main__":
    sys.exit(main())
