"""HTTP views: map requests onto receiver.ingest.Ingest, and its outcomes onto status codes."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.exceptions import HTTPException

from receiver.auth import Authenticator
from receiver.body import read_body
from receiver.ingest import Ingest
from receiver.publisher import Unavailable
from transforms.core.errors import RemoteWriteError
from transforms.core.protocol import (
    HEADER_EXEMPLARS_WRITTEN,
    HEADER_HISTOGRAMS_WRITTEN,
    HEADER_SAMPLES_WRITTEN,
    HEADER_TENANT,
    Protocol,
)
from transforms.core.wire.validation import Counts

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "1"
EXTENSION = "receiver"

blueprint = Blueprint("receiver", __name__)


class ReceiverState:
    """What the views share, owned by the app (app.extensions[EXTENSION])."""

    def __init__(self, ingest: Ingest, auth: Authenticator) -> None:
        self.ingest = ingest
        self.auth = auth


def _state() -> ReceiverState:
    return current_app.extensions[EXTENSION]


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


def error(status: int, message: str, protocol: Protocol | None = None) -> Response:
    response = jsonify(status="error", code=status, error=message)
    response.status_code = status
    response.headers.update(_written_headers(protocol, None))
    if status == 503:
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    if status == 408:  # the rest of the body may still be on its way: never reuse this connection
        response.headers["Connection"] = "close"
    _state().ingest.metrics.requests.labels(str(status), protocol.value if protocol else "").inc()
    return response


@blueprint.post("/api/v1/write")
def write() -> Response:
    state = _state()
    ingest, config = state.ingest, state.ingest.config
    if not state.auth.allows(request.headers.get("Authorization")):
        response = error(401, "missing or bad credentials")
        response.headers["WWW-Authenticate"] = state.auth.challenge
        return response
    protocol: Protocol | None = None
    try:
        with ingest.admitted():
            protocol = ingest.negotiate(request.headers.get("Content-Type"), request.headers.get("Content-Encoding"),
                                        request.content_length)
            tenant = ingest.tenant(request.headers.get(HEADER_TENANT))
            body = read_body(request.stream, config.max_body_bytes, request.content_length)
            counts = ingest.accept(body, protocol, tenant)
    except RemoteWriteError as exc:
        return error(exc.status, exc.message, protocol)
    except Unavailable as exc:
        log.warning("%s", exc)
        return error(503, str(exc), protocol)
    ingest.metrics.requests.labels("204", protocol.value).inc()
    return Response(status=204, headers=_written_headers(protocol, counts))


@blueprint.get("/-/healthy")
def healthy() -> Response:
    return jsonify(status="healthy")


@blueprint.get("/-/ready")
def ready() -> Response:
    ingest = _state().ingest
    try:
        ingest.publisher.check_ready()
    except Exception as exc:  # any failure to reach the topic means not ready; say why
        response = jsonify(status="not ready", error=f"topic {ingest.config.topic} unreachable: {exc}")
        response.status_code = 503
        return response
    return jsonify(status="ready")


@blueprint.get("/metrics")
def metrics_endpoint() -> Response:
    return Response(_state().ingest.metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)


@blueprint.app_errorhandler(Exception)
def unexpected(exc: Exception) -> Response:
    # A bug of ours, not the sender's data: 500 makes Prometheus retry, so nothing is lost.
    log.exception("unexpected error handling %s %s", request.method, request.path)
    return error(500, f"internal error: {type(exc).__name__}")


@blueprint.app_errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    response = error(status, exc.description or exc.name)
    if exc.code == 405 and exc.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    return response
