"""Reader configuration: one dataclass, filled from flags or READER_* environment variables."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

from transforms.core.flags import respell

ENV_PREFIX = "READER_"
MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ReaderConfig:
    archive_path: str
    host: str = "127.0.0.1"
    port: int = 9203
    # Prometheus' own remote-read server defaults: 5e7 samples per query, 1 MiB frames; ours answers from
    # memory, so the defaults are lower (docs/query.md, "Limits").
    max_samples_per_query: int = 5_000_000
    max_bytes_per_response: int = 256 * MIB
    max_body_bytes: int = 1 * MIB
    basic_auth_user: str | None = None
    basic_auth_password_file: str | None = None
    bearer_token_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    workers: int = 2
    threads: int = 4
    timeout: int = 120

    def __post_init__(self) -> None:
        if not self.archive_path:
            raise ValueError(f"--archive-path is required: the archive's root, a directory, gs://BUCKET/PATH or "
                             f"s3://BUCKET/PATH (or {ENV_PREFIX}ARCHIVE_PATH=...)")
        if bool(self.basic_auth_user) != bool(self.basic_auth_password_file):
            raise ValueError("--basic-auth-user and --basic-auth-password-file go together")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("--tls-cert-file and --tls-key-file go together")
        for name in ("port", "max_samples_per_query", "max_bytes_per_response", "max_body_bytes", "workers",
                     "threads", "timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reader", usage="python -m reader --archive-path=PATH [options]",
        epilog="Flags may be spelled with - or _ (--archive-path, --archive_path).",
        description=("Prometheus remote-read endpoint (POST /api/v1/read) over the Parquet archive: point "
                     "Prometheus' remote_read at it to query archived metrics with PromQL. Every flag can also "
                     f"be set as an environment variable {ENV_PREFIX}<FLAG>, e.g. {ENV_PREFIX}ARCHIVE_PATH."))
    fields = ReaderConfig.__dataclass_fields__

    def add(flag: str, help_text: str, **kwargs: object) -> None:
        dest = flag.lstrip("-").replace("-", "_")
        default = fields[dest].default
        default = os.environ.get(ENV_PREFIX + dest.upper(), None if default is dataclasses.MISSING else default)
        parser.add_argument(flag, default=default, help=f"{help_text} [env {ENV_PREFIX}{dest.upper()}]", **kwargs)

    add("--archive-path", "The archive's root: a directory, gs://BUCKET/PATH or s3://BUCKET/PATH (required).")
    add("--host", "Address to listen on (default %(default)s).")
    add("--port", "Port to listen on (default %(default)s).", type=int)
    add("--max-samples-per-query", "Most samples one query may return; more gets 422 (default %(default)s).",
        type=int)
    add("--max-bytes-per-response", "Largest response body (uncompressed); larger gets 422 (default %(default)s).",
        type=int)
    add("--max-body-bytes", "Largest compressed ReadRequest accepted; larger gets 413 (default %(default)s).",
        type=int)
    add("--basic-auth-user", "Require HTTP basic auth with this user name.")
    add("--basic-auth-password-file", "File holding the basic-auth password.")
    add("--bearer-token-file", "Require 'Authorization: Bearer <token>' with the token in this file.")
    add("--tls-cert-file", "Serve HTTPS with this certificate (PEM).")
    add("--tls-key-file", "Private key (PEM) for --tls-cert-file.")
    add("--workers", "gunicorn worker processes (default %(default)s).", type=int)
    add("--threads", "Threads per worker (default %(default)s).", type=int)
    add("--timeout", "Seconds a request may take before gunicorn restarts its worker (default %(default)s).",
        type=int)
    return parser


def parse_config(argv: Sequence[str]) -> ReaderConfig:
    parser = build_parser()
    known = {option[2:] for action in parser._actions for option in action.option_strings}
    args = parser.parse_args(respell(list(argv), "-", known))
    try:
        return ReaderConfig(**vars(args))
    except (TypeError, ValueError) as exc:
        parser.print_usage(sys.stderr)
        raise SystemExit(f"python -m reader: error: {exc}") from None
