"""The pipeline's options: one PipelineOptions subclass, validated at launch."""

from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.core import pubsub_names
from transforms.core.archive.format import DEFAULT_FORMAT, FORMATS
from transforms.core.sink.config import QueueConfig, SinkConfig

SCHEMES = ("gs://", "s3://")
# Beam's own names and aliases for runners on this machine (compared lower-case, "runner" suffix dropped)
LOCAL_RUNNERS = {"", "direct", "bundlebaseddirect", "switchingdirect", "fnapi", "prism"}


def is_local(runner: str | None) -> bool:
    """True for the runners that get the local loop of bounded runs."""
    return (runner or "").lower().removesuffix("runner") in LOCAL_RUNNERS


class ArchiveOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--input_subscription", required=False, default=None,
                            help="Pub/Sub subscription to read the receiver's messages from, "
                                 "projects/PROJECT/subscriptions/SUBSCRIPTION (required).")
        parser.add_argument("--archive_path", default="./archive",
                            help="Where archive files go: a local directory, gs://bucket/prefix or "
                                 "s3://bucket/prefix (default ./archive). Layout: "
                                 "tenant=T/date=YYYY-MM-DD/hour=HH/part-* by each sample's UTC time.")
        parser.add_argument("--archive_format", default=DEFAULT_FORMAT,
                            help=f"The archive files' format: {', '.join(sorted(FORMATS))} "
                                 f"(default {DEFAULT_FORMAT}: newline-delimited JSON, gzip, part-*.ndjson.gz; "
                                 "parquet: one row per sample, typed columns, zstd, part-*.parquet).")
        parser.add_argument("--window_size", type=int, default=60,
                            help="Seconds per window: files are written at least this often (default 60).")
        parser.add_argument("--dead_letter_path", default=None,
                            help="Where undecodable messages go, whole, with their attributes and the error "
                                 "(default ARCHIVE_PATH/_dead_letters).")
        parser.add_argument("--max_lines_per_file", type=int, default=5_000_000,
                            help="Lines per archive file before another file is started for the same "
                                 "partition and window (default 5000000).")
        parser.add_argument("--max_batch_samples", type=int, default=2_000_000,
                            help="Local runner only: samples per bounded run before it is written and acked "
                                 "early, bounding memory (default 2000000).")
        parser.add_argument("--metrics_port", type=int, default=9202,
                            help="Local runner only: loopback port serving /metrics (Prometheus), /-/healthy and "
                                 "/-/ready (default 9202; 0 picks a free port and logs it).")
        parser.add_argument("--allowed_lateness", type=int, default=86_400,
                            help="Streaming runners only: seconds a late pane may still fire; each firing adds "
                                 "files, never overwrites (default 86400).")


def validate(options: ArchiveOptions) -> list[str]:
    """Launch-time checks that need no network. Returns readable problems (empty when fine)."""
    problems = []
    subscription_problem = pubsub_names.problem(options.input_subscription, "subscription")
    if subscription_problem:
        problems.append(f"--input_subscription {subscription_problem}")
    if options.archive_format not in FORMATS:
        problems.append(f"--archive_format must be one of {', '.join(sorted(FORMATS))}, got {options.archive_format!r}")
    for flag, path in (("--archive_path", options.archive_path), ("--dead_letter_path", options.dead_letter_path)):
        if path and "://" in path and not path.startswith(SCHEMES):
            problems.append(f"{flag} {path!r}: unsupported URL scheme; use a local path, gs:// or s3://")
        if path and path.startswith(SCHEMES) and not bucket_of(path):
            problems.append(f"{flag} {path!r} names no bucket")
    for flag, path in (("--archive_path", options.archive_path), ("--dead_letter_path", options.dead_letter_path)):
        if path is not None and not path.strip():
            problems.append(f"{flag} must not be empty")
    if options.window_size <= 0:
        problems.append("--window_size must be a positive number of seconds")
    if options.allowed_lateness < 0:
        problems.append("--allowed_lateness must be >= 0 seconds")
    if not 0 <= options.metrics_port <= 65535:
        problems.append("--metrics_port must be a port number, 0-65535")
    if options.max_lines_per_file <= 0 or options.max_batch_samples <= 0:
        problems.append("--max_lines_per_file and --max_batch_samples must be positive")
    return problems


def bucket_of(path: str) -> str:
    return path.split("://", 1)[1].split("/", 1)[0]


def dead_letter_path(options: ArchiveOptions) -> str:
    return options.dead_letter_path or options.archive_path.rstrip("/") + "/_dead_letters"


def _true_or_false(text: str) -> bool:
    """A boolean flag's value as a template passes it (--flag=true); a bare --flag is true."""
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


class SinkOptions(PipelineOptions):
    """Remote-write sinks. The flags configure one or more sinks alike; a sinks file configures each."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--remote_write_url", action="append", default=None,
                            help="Forward every sample to this remote-write endpoint (repeatable, or "
                                 "comma-separated, for fan-out). Each sink reads its own Pub/Sub subscription, "
                                 "INPUT_SUBSCRIPTION-NAME (created at launch if missing; NAME is derived from the "
                                 "URL), so a broken sink never holds back the archive or the other sinks.")
        parser.add_argument("--remote_write_config", default=None,
                            help="YAML/JSON sinks file with a 'remote_write:' list, one entry per sink, in the "
                                 "spirit of Prometheus' remote_write block (local path, gs:// or s3://). Adds "
                                 "to --remote_write_url.")
        parser.add_argument("--remote_write_protocol", default="1.0", choices=("1.0", "2.0"),
                            help="Remote-write protocol for --remote_write_url sinks (default 1.0).")
        parser.add_argument("--remote_write_timeout", type=float, default=SinkConfig.timeout,
                            help="Seconds per request before it counts as failed and is retried "
                                 f"(default {SinkConfig.timeout:g}).")
        parser.add_argument("--remote_write_header", action="append", default=None,
                            help="Extra request header 'Name: value' (repeatable). The spec's own headers "
                                 "(Content-Type, Content-Encoding, User-Agent, version) cannot be overridden.")
        parser.add_argument("--remote_write_bearer_token_file", default=None,
                            help="File holding a bearer token sent as 'Authorization: Bearer ...'.")
        parser.add_argument("--remote_write_basic_auth_username", default=None, help="Basic auth user name.")
        parser.add_argument("--remote_write_basic_auth_password_file", default=None,
                            help="File holding the basic auth password.")
        parser.add_argument("--remote_write_sigv4_region", default=None,
                            help="Sign each request with AWS SigV4 for this region (e.g. us-east-1), as Amazon "
                                 "Managed Service for Prometheus requires. Credentials come from the standard AWS "
                                 "chain (environment, profile, SSO, web identity, instance role), checked at launch.")
        parser.add_argument("--remote_write_sigv4_service", default=None,
                            help="SigV4 service name (default aps).")
        parser.add_argument("--remote_write_sigv4_role_arn", default=None,
                            help="Optional IAM role to assume (STS) with the chain's credentials before signing.")
        parser.add_argument("--remote_write_sigv4_profile", default=None,
                            help="Optional AWS profile of the shared config files to take credentials from.")
        parser.add_argument("--remote_write_tenant_header", default="forward", choices=("forward", "drop"),
                            help="forward: send each message's tenant as X-Scope-OrgID (default); drop: send none.")
        parser.add_argument("--remote_write_tenant", default=None,
                            help="Send this X-Scope-OrgID instead of the message's tenant (with "
                                 "--remote_write_tenant_label: for series without that label).")
        parser.add_argument("--remote_write_tenant_label", default=None,
                            help="Send each series under the tenant its LABEL names (as X-Scope-OrgID), one request "
                                 "per tenant; series without the label get --remote_write_tenant or the message's "
                                 "tenant. A value that is not a valid tenant id sends the series to dead letters.")
        parser.add_argument("--remote_write_tenant_label_drop", nargs="?", const=True, default=False,
                            type=_true_or_false,
                            help="Remove the --remote_write_tenant_label label before sending (true/false; the bare "
                                 "flag means true).")
        parser.add_argument("--remote_write_max_samples_per_request", type=int,
                            default=QueueConfig.max_samples_per_request,
                            help="Samples (float + histogram) per request at most "
                                 f"(default {QueueConfig.max_samples_per_request}).")
        parser.add_argument("--remote_write_max_bytes_per_request", type=int, default=QueueConfig.max_bytes_per_request,
                            help="Uncompressed bytes per request at most "
                                 f"(default {QueueConfig.max_bytes_per_request}).")
        parser.add_argument("--remote_write_shards", type=int, default=QueueConfig.shards,
                            help="Parallel senders per sink; a series always uses the same one, so its "
                                 f"samples stay in order (default {QueueConfig.shards}).")
        parser.add_argument("--remote_write_order", default="any", choices=("any", "strict"),
                            help="any: the stores take samples in any order (VictoriaMetrics, or an "
                                 "out_of_order_time_window); strict: they refuse samples older than the newest "
                                 "they hold (Prometheus, Mimir by default), so each sink remembers what it accepted "
                                 "and counts redelivered samples as already delivered instead of dead-lettering "
                                 "them (default any).")
        parser.add_argument("--remote_write_healthcheck_url", default=None,
                            help="Optional: a URL that must answer 2xx to GET at launch (e.g. "
                                 "http://vm:8428/health). Off by default: many stores answer GET with 405.")


def sinks_from_options(options: SinkOptions) -> list:
    """Every configured sink (flags, then the sinks file). Raises SinkConfigError with a readable message."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.core.sink import config

    flag_sinks = config.from_flags(
        options.remote_write_url or [], protocol=options.remote_write_protocol, timeout=options.remote_write_timeout,
        headers=options.remote_write_header or [], bearer_token_file=options.remote_write_bearer_token_file,
        basic_auth_username=options.remote_write_basic_auth_username,
        basic_auth_password_file=options.remote_write_basic_auth_password_file,
        sigv4_region=options.remote_write_sigv4_region, sigv4_service=options.remote_write_sigv4_service,
        sigv4_role_arn=options.remote_write_sigv4_role_arn, sigv4_profile=options.remote_write_sigv4_profile,
        tenant_header=options.remote_write_tenant_header, tenant=options.remote_write_tenant,
        tenant_label=options.remote_write_tenant_label, tenant_label_drop=options.remote_write_tenant_label_drop,
        max_samples_per_request=options.remote_write_max_samples_per_request,
        max_bytes_per_request=options.remote_write_max_bytes_per_request, shards=options.remote_write_shards,
        healthcheck_url=options.remote_write_healthcheck_url, order=options.remote_write_order)
    file_sinks = []
    if options.remote_write_config:
        try:
            with FileSystems.open(options.remote_write_config) as handle:
                text = handle.read().decode()
        except Exception as exc:  # missing file, no access: one readable line at launch
            raise config.SinkConfigError(
                f"cannot read --remote_write_config {options.remote_write_config}: {exc}") from exc
        file_sinks = config.from_document(text)
    return config.all_sinks(flag_sinks, file_sinks)
