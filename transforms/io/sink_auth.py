"""A sink's auth applied to one request: the one place it happens, just before the POST.

Secrets are read from their files at each request (a rotated file takes effect without a restart).
"""

from __future__ import annotations

import base64

from transforms.core.sink.auth import Auth, BasicAuth, BearerAuth, NoAuth
from transforms.io.secrets import read_secret


def authorization(auth: Auth) -> str | None:
    """The Authorization header value for `auth`, or None when the sink takes none."""
    match auth:
        case NoAuth():
            return None
        case BasicAuth(username=username, password=password, password_file=password_file):
            secret = read_secret(password_file) if password_file else password or ""
            # latin-1, as HTTP basic auth has always been sent (and as requests encodes it)
            return "Basic " + base64.b64encode(f"{username}:{secret}".encode("latin1")).decode()
        case BearerAuth(token_file=token_file):
            return f"Bearer {read_secret(token_file)}"
    raise TypeError(f"unknown sink auth {auth!r}")


def authorize(auth: Auth, headers: dict[str, str]) -> dict[str, str]:
    """`headers` with the auth applied (a new dict; the caller's is kept for a retry)."""
    value = authorization(auth)
    return {**headers, "Authorization": value} if value else headers
