"""HTTP views: POST /api/v1/read, health, readiness and metrics."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.exceptions import HTTPException

from reader.answer import Answerer
from receiver.auth import Authenticator
from receiver.body import read_body
from transforms.core.errors import RemoteWriteError
from transforms.core.protocol import DEFAULT_TENANT, HEADER_TENANT, TENANT_RULE, is_valid_tenant
from transforms.core.read.request import SAMPLES, ReadError, parse_read_request

log = logging.getLogger(__name__)
EXTENSION = "reader"
# A ReadRequest is a few matchers per query; decompressed it is never near this.
MAX_DECOMPRESSED_REQUEST = 16 * 1024 * 1024

blueprint = Blueprint("reader", __name__)


class ReaderState:
    """What the views share, owned by the app (app.extensions[EXTENSION])."""

    def __init__(self, answerer: Answerer, auth: Authenticator, max_body_bytes: int) -> None:
        self.answerer = answerer
        self.auth = auth
        self.max_body_bytes = max_body_bytes


def _state() -> ReaderState:
    return current_app.extensions[EXTENSION]


def error(status: int, message: str, response_type: str = "") -> Response:
    response = jsonify(status="error", code=status, error=message)
    response.status_code = status
    _state().answerer.metrics.requests.labels(str(status), response_type).inc()
    return response


def _tenant() -> str:
    tenant = request.headers.get(HEADER_TENANT) or DEFAULT_TENANT
    if not is_valid_tenant(tenant):
        raise ReadError(f"{HEADER_TENANT} {tenant!r} is not a valid tenant ({TENANT_RULE})")
    return tenant


@blueprint.post("/api/v1/read")
def read() -> Response:
    state = _state()
    if not state.auth.allows(request.headers.get("Authorization")):
        response = error(401, "missing or bad credentials")
        response.headers["WWW-Authenticate"] = state.auth.challenge
        return response
    started = time.perf_counter()
    kind = ""
    try:
        tenant = _tenant()
        body = read_body(request.stream, state.max_body_bytes, request.content_length)
        plan = parse_read_request(body, MAX_DECOMPRESSED_REQUEST)
        kind = "samples" if plan.response_type == SAMPLES else "streamed_xor_chunks"
        answer = state.answerer.answer(tenant, plan)
    except RemoteWriteError as exc:
        if exc.status >= 500:  # the archive, not the client, is at fault: the operator must see it
            log.error("read failed: %s", exc.message)
        return error(exc.status, exc.message, kind)
    state.answerer.metrics.seconds.observe(time.perf_counter() - started)
    state.answerer.metrics.requests.labels("200", kind).inc()
    response = Response(answer.body, status=200, content_type=answer.content_type)
    if answer.content_encoding:
        response.headers["Content-Encoding"] = answer.content_encoding
    return response


@blueprint.get("/-/healthy")
def healthy() -> Response:
    return jsonify(status="healthy")


@blueprint.get("/-/ready")
def ready() -> Response:
    archive = _state().answerer.archive
    try:
        reachable = archive.reachable()
    except OSError as exc:
        reachable, why = False, str(exc)
    else:
        why = "no such directory"
    if not reachable:
        response = jsonify(status="not ready", error=f"archive {archive.root} unreachable: {why}")
        response.status_code = 503
        return response
    return jsonify(status="ready")


@blueprint.get("/metrics")
def metrics_endpoint() -> Response:
    return Response(_state().answerer.metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)


@blueprint.app_errorhandler(Exception)
def unexpected(exc: Exception) -> Response:
    log.exception("unexpected error handling %s %s", request.method, request.path)
    return error(500, f"internal error: {type(exc).__name__}")


@blueprint.app_errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    response = error(exc.code or 500, exc.description or exc.name)
    if exc.code == 405 and exc.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    return response
