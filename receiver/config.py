"""Receiver configuration: one dataclass, filled from flags or RECEIVER_* environment variables."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

from transforms.core import pubsub_names
from transforms.core.flags import respell
from transforms.core.wire.prescan import RequestLimits
from transforms.core.wire.validation import NameValidation

ENV_PREFIX = "RECEIVER_"
MIB = 1024 * 1024
# Pub/Sub refuses publish requests over 10,000,000 bytes; leave room for attributes.
PUBSUB_MESSAGE_LIMIT = 9_500_000


@dataclasses.dataclass(frozen=True)
class ReceiverConfig:
    topic: str
    host: str = "127.0.0.1"
    port: int = 9201
    basic_auth_user: str | None = None
    basic_auth_password_file: str | None = None
    bearer_token_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # Per-request budget (docs/receiver.md, "Request limits"): 2 s of CPU and 256 MiB at worst within these.
    max_body_bytes: int = 16 * MIB
    max_decompressed_bytes: int = 16 * MIB
    max_series_per_request: int = RequestLimits.series
    max_samples_per_request: int = RequestLimits.samples
    max_labels_per_request: int = RequestLimits.labels
    max_symbols_per_request: int = RequestLimits.symbols
    max_buckets_per_request: int = RequestLimits.buckets
    # decompressed bytes being decoded or published at once in one worker; beyond it 503
    max_in_flight_bytes: int = 32 * MIB
    max_message_bytes: int = PUBSUB_MESSAGE_LIMIT
    max_in_flight: int = 64
    max_outstanding_bytes: int = 256 * MIB
    # under Prometheus' default 30 s remote_timeout, so it gets our 503 before it gives up itself
    publish_timeout: float = 10.0
    # a request must arrive within this many seconds (408 after)
    body_read_timeout: float = 10.0
    # bodies being received (buffered before a thread takes them) at once per worker; beyond it 503
    max_buffered_bytes: int = 256 * MIB
    name_validation: NameValidation = NameValidation.UTF8
    workers: int = 2
    threads: int = 8

    def __post_init__(self) -> None:
        if not self.topic:
            raise ValueError(f"--topic is required: the Pub/Sub topic to publish to, e.g. "
                             f"--topic=projects/local-project/topics/remote-write (or {ENV_PREFIX}TOPIC=...)")
        topic_problem = pubsub_names.problem(self.topic, "topic")
        if topic_problem:
            raise ValueError(f"--topic {topic_problem}")
        if bool(self.basic_auth_user) != bool(self.basic_auth_password_file):
            raise ValueError("--basic-auth-user and --basic-auth-password-file go together")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("--tls-cert-file and --tls-key-file go together")
        for name in ("port", "max_body_bytes", "max_decompressed_bytes", "max_message_bytes",
                     "max_in_flight", "max_outstanding_bytes", "body_read_timeout", "max_buffered_bytes", "workers",
                     "threads",
                     "max_series_per_request", "max_samples_per_request", "max_labels_per_request",
                     "max_symbols_per_request", "max_buckets_per_request", "max_in_flight_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive")
        if self.max_in_flight_bytes < self.max_decompressed_bytes:
            raise ValueError("--max-in-flight-bytes must be at least --max-decompressed-bytes, "
                             "or the largest allowed request could never be taken")
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError("--max-buffered-bytes must be at least --max-body-bytes, "
                             "or the largest allowed body could never be received")
        if self.max_message_bytes > PUBSUB_MESSAGE_LIMIT:
            raise ValueError(f"--max-message-bytes cannot exceed {PUBSUB_MESSAGE_LIMIT} (Pub/Sub's limit)")


    @property
    def request_limits(self) -> RequestLimits:
        return RequestLimits(series=self.max_series_per_request, samples=self.max_samples_per_request,
                             labels=self.max_labels_per_request, symbols=self.max_symbols_per_request,
                             buckets=self.max_buckets_per_request)


def _env(name: str, default: object = None) -> object:
    return os.environ.get(ENV_PREFIX + name.upper().replace("-", "_"), default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m receiver",
        usage="python -m receiver --topic=projects/PROJECT/topics/NAME [options]",
        epilog="Flags may be spelled with - or _ (--max-body-bytes, --max_body_bytes).",
        description=(
            "Prometheus remote-write receiver (remote-write 1.0 and 2.0). Validates each request "
            "and publishes it, still snappy-compressed, to a Pub/Sub topic; answers 2xx only after "
            "Pub/Sub confirms. Set PUBSUB_EMULATOR_HOST to use the emulator. Every flag can also be "
            f"set as an environment variable: {ENV_PREFIX}<FLAG>, e.g. {ENV_PREFIX}TOPIC, "
            f"{ENV_PREFIX}MAX_BODY_BYTES."
        ),
    )
    d = ReceiverConfig.__dataclass_fields__

    def add(flag: str, help_text: str, **kwargs: object) -> None:
        dest = flag.lstrip("-").replace("-", "_")
        default = _env(dest, kwargs.pop("default", d[dest].default if dest in d else None))
        if default is dataclasses.MISSING:
            default = None
        parser.add_argument(flag, default=default, help=f"{help_text} [env {ENV_PREFIX}{dest.upper()}]",
                            **kwargs)

    add("--topic", "Pub/Sub topic to publish to, projects/PROJECT/topics/TOPIC (required).")
    add("--host", "Address to listen on (default %(default)s).")
    add("--port", "Port to listen on (default %(default)s).", type=int)
    add("--basic-auth-user", "Require HTTP basic auth with this user name.")
    add("--basic-auth-password-file", "File holding the basic-auth password.")
    add("--bearer-token-file", "Require 'Authorization: Bearer <token>' with the token in this file.")
    add("--tls-cert-file", "Serve HTTPS with this certificate (PEM).")
    add("--tls-key-file", "Private key (PEM) for --tls-cert-file.")
    add("--max-body-bytes", "Largest compressed request body accepted; larger gets 413 (default %(default)s).",
        type=int)
    add("--max-decompressed-bytes",
        "Largest decompressed body accepted, checked from the snappy header before allocating; "
        "larger gets 413 (default %(default)s).", type=int)
    add("--max-series-per-request", "Most series per request (1.0 metadata entries count as series); "
        "more gets 413, checked before the protobuf is parsed (default %(default)s).", type=int)
    add("--max-samples-per-request", "Most samples per request (float samples, native histogram samples and "
        "exemplars together); more gets 413 (default %(default)s).", type=int)
    add("--max-labels-per-request", "Most label pairs per request, exemplars' included; more gets 413 "
        "(default %(default)s).", type=int)
    add("--max-symbols-per-request", "Most 2.0 symbols-table entries per request; more gets 413 "
        "(default %(default)s).", type=int)
    add("--max-buckets-per-request", "Most native histogram bucket entries (spans, deltas, counts, custom values) "
        "per request; more gets 413 (default %(default)s).", type=int)
    add("--max-in-flight-bytes", "Decompressed bytes of requests being decoded or published at once per worker; "
        "beyond it 503 + Retry-After (default %(default)s; at least --max-decompressed-bytes).", type=int)
    add("--max-message-bytes",
        "Bodies larger than this are split by series into several Pub/Sub messages "
        "(default %(default)s, just under Pub/Sub's 10 MB limit).", type=int)
    add("--max-in-flight", "Requests handled at once per worker before answering 503 + Retry-After "
        "(default %(default)s; a worker runs at most --threads at a time).", type=int)
    add("--max-outstanding-bytes", "Bytes per worker published but not yet confirmed by Pub/Sub; beyond "
        "it requests get 503 + Retry-After (default %(default)s).", type=int)
    add("--publish-timeout", "Seconds to wait for Pub/Sub to confirm a publish before answering 503 "
        "(default %(default)s).", type=float)
    add("--body-read-timeout", "Seconds a whole request (headers and body) may take to arrive; slower gets 408 "
        "and the connection is closed. Requests are read by each worker's event loop before a thread takes "
        "them, so slow senders hold no thread meanwhile (default %(default)s).", type=float)
    add("--max-buffered-bytes", "Bytes of request bodies being received at once per worker (buffered before a "
        "thread takes them); beyond it 503 + Retry-After (default %(default)s; at least --max-body-bytes).",
        type=int)
    add("--name-validation", "Metric/label name rules: 'utf8' (any non-empty UTF-8, as Prometheus 3 and "
        "the 2.0 spec allow) or 'legacy' ([a-zA-Z_:][a-zA-Z0-9_:]*, Prometheus 2.x) (default %(default)s).",
        choices=[m.value for m in NameValidation])
    add("--workers", "gunicorn worker processes (default %(default)s).", type=int)
    add("--threads", "Threads per worker (default %(default)s).", type=int)
    return parser


def parse_config(argv: Sequence[str] | None = None) -> ReceiverConfig:
    """Parse flags (falling back to env vars); exits with a clear message on bad values."""
    parser = build_parser()
    known = {option[2:] for action in parser._actions for option in action.option_strings}
    args = parser.parse_args(respell(sys.argv[1:] if argv is None else argv, "-", known))
    values = vars(args)
    for name, field in ReceiverConfig.__dataclass_fields__.items():
        # env values arrive as strings; coerce like argparse would
        if isinstance(values.get(name), str) and field.type in ("int", "float"):
            values[name] = int(values[name]) if field.type == "int" else float(values[name])
    values["name_validation"] = NameValidation(values["name_validation"])
    try:
        return ReceiverConfig(**values)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
