"""The Flask app: POST /api/v1/write, health, readiness and metrics.

A request is answered 2xx only after every Pub/Sub message it became is confirmed;
a rejected request publishes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures
from datetime import UTC, datetime

from flask import Flask, Response, jsonify, request
from google.cloud.pubsub_v1.publisher.exceptions import FlowControlLimitError
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.exceptions import HTTPException

from receiver.auth import Authenticator
from receiver.body import BodyDeadlines, read_body
from receiver.config import ReceiverConfig
from receiver.metrics import ReceiverMetrics
from receiver.publisher import Publisher, PubSubPublisher
from transforms import codec
from transforms.errors import InvalidPayload, PayloadTooLarge, RemoteWriteError
from transforms.protocol import (
    DEFAULT_TENANT,
    HEADER_EXEMPLARS_WRITTEN,
    HEADER_HISTOGRAMS_WRITTEN,
    HEADER_SAMPLES_WRITTEN,
    HEADER_TENANT,
    TENANT_RULE,
    Protocol,
    is_valid_tenant,
)
from transforms.validation import Counts

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "1"


class Unavailable(Exception):
    """We cannot take the request now; the sender must retry (503 + Retry-After)."""


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _tenant() -> str:
    tenant = request.headers.get(HEADER_TENANT, "").strip() or DEFAULT_TENANT
    if not is_valid_tenant(tenant):
        raise InvalidPayload(f"invalid {HEADER_TENANT} {tenant!r}: use {TENANT_RULE}")
    return tenant


def _written_headers(protocol: Protocol | None, counts: Counts | None) -> dict[str, str]:
    """Spec 2.0: receivers report what they wrote, on success and (as 0) on errors."""
    if protocol is not Protocol.V2:
        return {}
    counts = counts or Counts()
    return {
        HEADER_SAMPLES_WRITTEN: str(counts.samples),
        HEADER_HISTOGRAMS_WRITTEN: str(counts.histograms),
        HEADER_EXEMPLARS_WRITTEN: str(counts.exemplars),
    }


def create_app(
    config: ReceiverConfig,
    publisher: Publisher | None = None,
    metrics: ReceiverMetrics | None = None,
) -> Flask:
    app = Flask(__name__)
    publisher = publisher or PubSubPublisher(config.topic, config.max_outstanding_bytes)
    metrics = metrics or ReceiverMetrics()
    auth = Authenticator(config)
    slots = threading.BoundedSemaphore(config.max_in_flight)
    deadlines = BodyDeadlines()
    app.extensions["receiver"] = {"publisher": publisher, "metrics": metrics, "config": config}

    def error(status: int, message: str, protocol: Protocol | None = None) -> Response:
        response = jsonify(status="error", code=status, error=message)
        response.status_code = status
        response.headers.update(_written_headers(protocol, None))
        if status == 503:
            response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        if status == 408:  # the rest of the body may still be on its way: never reuse this connection
            response.headers["Connection"] = "close"
        metrics.requests.labels(str(status), protocol.value if protocol else "").inc()
        return response

    def publish(body: bytes, decoded: codec.DecodedRequest, tenant: str) -> None:
        received_at = _now_rfc3339()
        if len(body) <= config.max_message_bytes:
            parts = [codec.Part(body, decoded.counts)]
        else:
            parts = codec.split(decoded.message, decoded.protocol, config.max_message_bytes)
        started = time.perf_counter()
        pending = []
        for index, part in enumerate(parts):
            attributes = codec.message_attributes(decoded.protocol, tenant, received_at, part.counts)
            if len(parts) > 1:
                attributes.update(part=str(index), parts=str(len(parts)))
            try:
                pending.append(publisher.publish(part.body, attributes))
            except FlowControlLimitError as exc:
                raise Unavailable(f"over --max-outstanding-bytes of unconfirmed publishes: {exc}") from exc
        done, not_done = futures.wait(pending, timeout=config.publish_timeout)
        failures = [f.exception() for f in done if f.exception() is not None]
        if not_done or failures:
            for f in not_done:
                f.cancel()
            reason = f"timed out after {config.publish_timeout}s" if not_done else str(failures[0])
            raise Unavailable(f"cannot publish to Pub/Sub: {reason}")
        metrics.publish_seconds.observe(time.perf_counter() - started)
        metrics.messages.inc(len(parts))

    @app.post("/api/v1/write")
    def write() -> Response:
        if not auth.allows(request.headers.get("Authorization")):
            response = error(401, "missing or bad credentials")
            response.headers["WWW-Authenticate"] = auth.challenge
            return response
        if not slots.acquire(blocking=False):
            return error(503, f"over the in-flight limit of {config.max_in_flight} requests; retry")
        metrics.in_flight.inc()
        protocol: Protocol | None = None
        try:
            protocol = codec.protocol_for_content_type(request.headers.get("Content-Type"))
            codec.check_content_encoding(request.headers.get("Content-Encoding"))
            if request.content_length is not None and request.content_length > config.max_body_bytes:
                raise PayloadTooLarge(f"body of {request.content_length} bytes exceeds {config.max_body_bytes}")
            tenant = _tenant()
            with deadlines.watch(request.environ.get("gunicorn.socket"), config.body_read_timeout) as expired:
                body = read_body(request.stream, config.max_body_bytes, expired, config.body_read_timeout)
            metrics.bytes.inc(len(body))
            decoded = codec.decode(body, protocol, config.max_decompressed_bytes, config.name_validation)
            if decoded.uncompressed_bytes:  # an empty request (a sender's probe) carries nothing to keep
                publish(body, decoded, tenant)
        except RemoteWriteError as exc:
            return error(exc.status, exc.message, protocol)
        except Unavailable as exc:
            log.warning("%s", exc)
            return error(503, str(exc), protocol)
        finally:
            metrics.in_flight.dec()
            slots.release()
        metrics.accepted(protocol.value, decoded.counts)
        metrics.requests.labels("204", protocol.value).inc()
        return Response(status=204, headers=_written_headers(protocol, decoded.counts))

    @app.get("/-/healthy")
    def healthy() -> Response:
        return jsonify(status="healthy")

    @app.get("/-/ready")
    def ready() -> Response:
        try:
            publisher.check_ready()
        except Exception as exc:  # any failure to reach the topic means not ready; say why
            response = jsonify(status="not ready", error=f"topic {config.topic} unreachable: {exc}")
            response.status_code = 503
            return response
        return jsonify(status="ready")

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        # A bug of ours, not the sender's data: 500 makes Prometheus retry, so nothing is lost.
        log.exception("unexpected error handling %s %s", request.method, request.path)
        return error(500, f"internal error: {type(exc).__name__}")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        response = error(status, exc.description or exc.name)
        if exc.code == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return response

    return app
