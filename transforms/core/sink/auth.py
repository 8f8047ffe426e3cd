"""How a sink authenticates: one frozen spec per kind, parsed in `transforms.core.sink.config.parse_auth`.

The spec holds no secret material read from disk: the HTTP service (`transforms.io.sink_auth`) turns it
into request headers as the last step before each POST, reading secret files and AWS credentials there,
so a rotated file takes effect without a restart and signing kinds cover the exact body sent. Adding a
kind means one class here, one branch in `parse_auth` and one in `transforms.io.sink_auth.authorize`.
"""

from __future__ import annotations

import dataclasses

SIGV4_DEFAULT_SERVICE = "aps"  # Amazon Managed Service for Prometheus


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


@dataclasses.dataclass(frozen=True)
class SigV4Auth:
    """AWS Signature Version 4 over each request, with credentials from the standard AWS chain.

    `profile` picks a named profile of the shared config files; `role_arn` is assumed (STS) on top of
    whatever credentials the chain yields.
    """

    region: str
    service: str = SIGV4_DEFAULT_SERVICE
    role_arn: str | None = None
    profile: str | None = None


Auth = NoAuth | BasicAuth | BearerAuth | SigV4Auth
