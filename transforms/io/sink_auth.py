"""A sink's auth applied to one request: the one place it happens, just before the POST.

Secrets are read from their files at each request (a rotated file takes effect without a restart).
SigV4 signs the exact URL, headers and body about to be sent, at each attempt, so a retry carries a
fresh date and signature.
"""

from __future__ import annotations

import base64
import typing
from collections.abc import Iterable

from transforms.core.sink.auth import Auth, BasicAuth, BearerAuth, NoAuth, SigV4Auth
from transforms.core.sink.config import SinkConfig
from transforms.io.secrets import read_secret

if typing.TYPE_CHECKING:
    from botocore.credentials import Credentials

ROLE_SESSION_NAME = "prometheus-remote-write-pipeline"


class SinkAuthError(Exception):
    """Credentials that cannot be had (none found, expired, role not assumable): retrying cannot help."""


def authorization(auth: Auth) -> str | None:
    """The Authorization header value of a static kind, or None when the sink takes none."""
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


def aws_credentials(auth: SigV4Auth) -> Credentials:
    """The credentials the standard AWS chain yields for `auth` (env, shared files, SSO, IMDS ...).

    Refreshable ones (assumed roles, SSO, instance roles) refresh themselves when read; with a role
    ARN the chain's credentials only serve to assume it.
    """
    import botocore.session
    from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        session = botocore.session.Session(profile=auth.profile)
        credentials = session.get_credentials()
    except (BotoCoreError, ClientError) as exc:
        raise SinkAuthError(f"SigV4: cannot load AWS credentials: {exc}") from exc
    if credentials is None:
        where = f"profile {auth.profile!r}" if auth.profile else "the standard chain"
        raise SinkAuthError(f"SigV4: no AWS credentials found in {where} (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                            "AWS_PROFILE, ~/.aws/credentials, SSO, web identity or the instance role)")
    if auth.role_arn:
        fetcher = AssumeRoleCredentialFetcher(
            client_creator=lambda name, **kwargs: session.create_client(name, region_name=auth.region, **kwargs),
            source_credentials=credentials, role_arn=auth.role_arn,
            extra_args={"RoleSessionName": ROLE_SESSION_NAME})
        credentials = DeferredRefreshableCredentials(refresh_using=fetcher.fetch_credentials, method="assume-role")
    return credentials


def frozen(credentials: Credentials, auth: SigV4Auth) -> typing.Any:
    """The current key, secret and token; a refresh that fails (expired, role refused) is a SinkAuthError."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        current = credentials.get_frozen_credentials()
    except (BotoCoreError, ClientError) as exc:
        role = f" assuming {auth.role_arn}" if auth.role_arn else ""
        raise SinkAuthError(f"SigV4: AWS credentials unusable{role}: {exc}") from exc
    if not current.access_key or not current.secret_key:
        raise SinkAuthError("SigV4: AWS credentials have no access key or secret key")
    return current


def check_credentials(auth: SigV4Auth) -> None:
    """At launch: credentials exist and (for refreshable ones) can be refreshed now. Raises SinkAuthError."""
    frozen(aws_credentials(auth), auth)


def credential_problems(sinks: Iterable[SinkConfig]) -> list[str]:
    """At launch, one line per SigV4 sink whose credentials are missing or unusable (none for other kinds)."""
    problems = []
    for sink in sinks:
        if isinstance(sink.auth, SigV4Auth):
            try:
                check_credentials(sink.auth)
            except SinkAuthError as exc:
                problems.append(f"sink {sink.name}: {exc}")
    return problems


def sigv4_headers(auth: SigV4Auth, credentials: Credentials, url: str, body: bytes,
                  headers: dict[str, str]) -> dict[str, str]:
    """`headers` plus X-Amz-Date, the session token if any, and the Authorization signing all of them and the body."""
    from botocore.auth import SigV4Auth as Signer
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    Signer(frozen(credentials, auth), auth.service, auth.region).add_auth(request)
    return dict(request.headers.items())


def authorize(auth: Auth, url: str, body: bytes, headers: dict[str, str], *,
              credentials: Credentials | None = None) -> dict[str, str]:
    """`headers` with the auth applied (a new dict; the caller's is kept for a retry).

    SigV4 needs `credentials` (the HTTP service resolves them once with `aws_credentials`); without them
    they are looked up here, which costs a credential-chain walk per request.
    """
    if isinstance(auth, SigV4Auth):
        return sigv4_headers(auth, credentials or aws_credentials(auth), url, body, headers)
    value = authorization(auth)
    return {**headers, "Authorization": value} if value else headers
