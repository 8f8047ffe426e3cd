"""A local remote-write sink that checks AWS SigV4 like Amazon Managed Prometheus would: it recomputes each
request's signature with botocore's own signer from the credentials it knows, and refuses a mismatch with 403."""

from __future__ import annotations

import dataclasses
import hmac
import http.server
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from transforms.core.protocol import Protocol
from transforms.core.wire import codec

_AUTHORIZATION = re.compile(r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
                            r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
                            r"Signature=(?P<signature>[0-9a-f]{64})\Z")
MAX_SKEW_SECONDS = 300  # AWS refuses a request dated more than 5 minutes away from its clock
# What must be signed: a signature that leaves out the body's type, encoding or tenant could be replayed with others.
MUST_SIGN = {"host", "x-amz-date", "content-type", "content-encoding", "x-prometheus-remote-write-version"}


def verify(headers: dict[str, str], body: bytes, path: str, keys: dict[str, Credentials], region: str,
           service: str, now: datetime | None = None) -> str | None:
    """None if the request is signed correctly for `region`/`service` by one of `keys`, else why not."""
    lower = {k.lower(): v for k, v in headers.items()}
    match = _AUTHORIZATION.match(lower.get("authorization", ""))
    if not match:
        return f"no SigV4 Authorization header: {lower.get('authorization')!r}"
    credentials = keys.get(match["key"])
    if credentials is None:
        return f"unknown access key {match['key']}"
    amz_date = lower.get("x-amz-date", "")
    if (match["region"], match["service"], match["date"]) != (region, service, amz_date[:8]):
        return f"wrong scope {match['date']}/{match['region']}/{match['service']} for {amz_date}"
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return f"bad X-Amz-Date {amz_date!r}"
    if abs(((now or datetime.now(UTC)) - signed_at).total_seconds()) > MAX_SKEW_SECONDS:
        return f"X-Amz-Date {amz_date} is too far from now"
    signed = match["signed"].split(";")
    if missing := MUST_SIGN - set(signed):
        return f"headers left unsigned: {sorted(missing)}"
    if credentials.token and "x-amz-security-token" not in signed:
        return "session token not signed"
    request = AWSRequest(method="POST", url=f"http://{lower['host']}{path}", data=body,
                         headers={name: lower[name] for name in signed if name in lower})
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(credentials, service, region)
    if signer.signed_headers(signer.headers_to_sign(request)) != match["signed"]:
        return "signed header list differs"
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    return None if hmac.compare_digest(expected, match["signature"]) else "signature mismatch"


@dataclasses.dataclass
class Seen:
    headers: dict[str, str]
    body: bytes
    problem: str | None  # None: the signature verified


class VerifyingSink(http.server.BaseHTTPRequestHandler):
    """403 for a bad signature; otherwise the next scripted status (then 204), with 2.0's *-Written headers."""

    keys: dict[str, Credentials] = {}
    region = "us-east-1"
    service = "aps"
    answers: list[int] = []
    seen: list[Seen] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = dict(self.headers)
        problem = verify(headers, body, self.path, self.keys, self.region, self.service)
        VerifyingSink.seen.append(Seen(headers, body, problem))
        status = 403 if problem else (VerifyingSink.answers.pop(0) if VerifyingSink.answers else 204)
        self.send_response(status)
        if status < 300 and "proto=io.prometheus.write.v2" in headers.get("Content-Type", ""):
            counts = codec.decode(body, Protocol.V2, 1 << 24).counts
            self.send_header("X-Prometheus-Remote-Write-Samples-Written", str(counts.samples))
            self.send_header("X-Prometheus-Remote-Write-Histograms-Written", str(counts.histograms))
            self.send_header("X-Prometheus-Remote-Write-Exemplars-Written", str(counts.exemplars))
        answer = (problem or "").encode()
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        return


@contextmanager
def verifying_sink(keys: dict[str, Credentials], answers: list[int] | None = None) -> Iterator[str]:
    """The sink on a free port; yields its write URL."""
    VerifyingSink.keys, VerifyingSink.answers, VerifyingSink.seen = keys, list(answers or []), []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), VerifyingSink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/workspaces/ws-test/api/v1/remote_write"
    finally:
        server.shutdown()
        server.server_close()
