"""How a sink authenticates: one class per kind, applied in one place (transforms.sink.request.headers_for).

Adding a kind (SigV4, OAuth2 ...) means one class here with `authorization()`, and one branch in
`transforms.sink.config.parse_auth`. Secrets are read from their files at each request, so a rotated
file takes effect without a restart.
"""

from __future__ import annotations

import base64
import dataclasses

from transforms.secrets import read_secret


@dataclasses.dataclass(frozen=True)
class NoAuth:
    def authorization(self) -> str | None:
        return None


@dataclasses.dataclass(frozen=True)
class BasicAuth:
    username: str
    password: str | None = None
    password_file: str | None = None

    def authorization(self) -> str:
        password = read_secret(self.password_file) if self.password_file else self.password or ""
        # latin-1, as HTTP basic auth has always been sent (and as requests encodes it)
        token = base64.b64encode(f"{self.username}:{password}".encode("latin1")).decode()
        return f"Basic {token}"


@dataclasses.dataclass(frozen=True)
class BearerAuth:
    token_file: str

    def authorization(self) -> str:
        return f"Bearer {read_secret(self.token_file)}"


Auth = NoAuth | BasicAuth | BearerAuth
