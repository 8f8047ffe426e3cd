"""The pipeline's options: one PipelineOptions subclass, validated at launch."""

from __future__ import annotations

import re

from apache_beam.options.pipeline_options import PipelineOptions

SUBSCRIPTION = re.compile(r"projects/[^/]+/subscriptions/[^/]{3,255}\Z")
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
                                 "tenant=T/date=YYYY-MM-DD/hour=HH/part-*.ndjson.gz by each sample's UTC time.")
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
        parser.add_argument("--allowed_lateness", type=int, default=86_400,
                            help="Streaming runners only: seconds a late pane may still fire; each firing adds "
                                 "files, never overwrites (default 86400).")


def validate(options: ArchiveOptions) -> list[str]:
    """Launch-time checks that need no network. Returns readable problems (empty when fine)."""
    problems = []
    if not options.input_subscription:
        problems.append("--input_subscription is required (projects/PROJECT/subscriptions/SUBSCRIPTION)")
    elif not SUBSCRIPTION.match(options.input_subscription):
        problems.append(f"--input_subscription must look like projects/PROJECT/subscriptions/NAME, got "
                        f"{options.input_subscription!r}")
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
    if options.max_lines_per_file <= 0 or options.max_batch_samples <= 0:
        problems.append("--max_lines_per_file and --max_batch_samples must be positive")
    return problems


def bucket_of(path: str) -> str:
    return path.split("://", 1)[1].split("/", 1)[0]


def dead_letter_path(options: ArchiveOptions) -> str:
    return options.dead_letter_path or options.archive_path.rstrip("/") + "/_dead_letters"
