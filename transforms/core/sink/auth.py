"""How a sink authenticates: one frozen spec per kind, parsed in `transforms.core.sink.config.parse_auth`.

The spec holds no secret material read from disk: the HTTP service (`transforms.io.sink_auth`) turns it
into request headers as the last step before each POST, reading secret files there, so a rotated file
takes effect without a restart and signing kinds can cover the exact body sent. Adding a kind means one
class here, one branch in `parse_auth` and one in `transforms.io.sink_auth.authorize`.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class NoAuth:
    pass


@dataclasses.dataclass(frozen=True)
class BasicAuth:
    username: str
    password: str | None = None
    password_file: str | None = None


@dataclasses.dataclass(frozen=True)
class BearerAuth:
    token_file: str


Auth = NoAuth | BasicAuth | BearerAuth
