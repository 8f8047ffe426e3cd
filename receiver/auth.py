"""Request authentication: HTTP basic auth and/or a bearer token, compared in constant time."""

from __future__ import annotations

import base64
import binascii
import hmac

from receiver.config import ReceiverConfig
from transforms.io.secrets import read_secret_bytes as _read_secret


class Authenticator:
    """Accepts a request if any configured credential matches; open if none is configured."""

    def __init__(self, config: ReceiverConfig) -> None:
        self._basic: tuple[bytes, bytes] | None = None
        self._bearer: bytes | None = None
        if config.basic_auth_user and config.basic_auth_password_file:
            self._basic = (config.basic_auth_user.encode(), _read_secret(config.basic_auth_password_file))
        if config.bearer_token_file:
            self._bearer = _read_secret(config.bearer_token_file)

    @property
    def enabled(self) -> bool:
        return self._basic is not None or self._bearer is not None

    @property
    def challenge(self) -> str:
        """The WWW-Authenticate value for a 401."""
        return 'Basic realm="remote-write"' if self._basic else 'Bearer realm="remote-write"'

    def allows(self, authorization: str | None) -> bool:
        if not self.enabled:
            return True
        if not authorization:
            return False
        scheme, _, credentials = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self._bearer is not None:
            return hmac.compare_digest(credentials.strip().encode(), self._bearer)
        if scheme == "basic" and self._basic is not None:
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            user, sep, password = decoded.partition(b":")
            user_ok = hmac.compare_digest(user, self._basic[0])
            password_ok = hmac.compare_digest(password, self._basic[1])
            return bool(sep) and user_ok and password_ok
        return False
