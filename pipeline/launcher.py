"""Parse and validate options, then run the right graph for the runner."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, S3Options, StandardOptions
from prometheus_client import CollectorRegistry

from pipeline.forward_loop import start_forward_loops
from pipeline.graph import build_streaming
from pipeline.local_loop import LocalLoop
from pipeline.metrics import METRICS_HOST, PipelineCollector, Readiness, StatusServer
from pipeline.options import (
    ArchiveOptions,
    SinkOptions,
    bucket_of,
    dead_letter_path,
    is_local,
    sinks_from_options,
    validate,
)
from transforms.core.flags import respell
from transforms.core.sink.config import SinkConfig, SinkConfigError
from transforms.io.sink_auth import credential_problems

LAUNCH_CALL_SECONDS = 10.0  # each launch-time Pub/Sub call, retries included


def check_subscription(subscription: str) -> list[str]:
    """The local runner pulls it itself: say so at launch, in seconds, if Pub/Sub is down or it does not exist."""
    from google.api_core import exceptions as google_exceptions
    from google.api_core.retry import Retry

    from transforms.io.pubsub import subscriber_client, unreachable

    down = unreachable()
    if down:
        return [down]
    try:
        with subscriber_client() as subscriber:
            subscriber.get_subscription(request={"subscription": subscription}, timeout=LAUNCH_CALL_SECONDS,
                                        retry=Retry(timeout=LAUNCH_CALL_SECONDS))
    except google_exceptions.NotFound:
        return [f"subscription {subscription} does not exist: create it on the receiver's topic "
                "(gcloud pubsub subscriptions create, or make pubsub for the emulator)"]
    except google_exceptions.PermissionDenied:
        return []  # a pull-only role may not read subscription metadata; pulling will tell
    except Exception as exc:  # credentials, network: one clear line, not a stack trace
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        return [f"cannot read subscription {subscription}: {first}"]
    return []


def ensure_sink_subscriptions(input_subscription: str, sinks: Sequence[SinkConfig]) -> list[str]:
    """Each sink reads its own subscription on the input's topic; create the missing ones.

    A subscription only receives what is published after it exists: create it (launch once with
    the sink configured) before relying on it for older data.
    """
    if not sinks:
        return []
    from google.api_core import exceptions as google_exceptions

    from transforms.io.pubsub import subscriber_client

    problems = []
    try:
        with subscriber_client() as subscriber:
            topic = subscriber.get_subscription(request={"subscription": input_subscription}, timeout=30).topic
            for sink in sinks:
                name = sink.subscription_for(input_subscription)
                try:
                    subscriber.get_subscription(request={"subscription": name}, timeout=30)
                except google_exceptions.NotFound:
                    subscriber.create_subscription(request={"name": name, "topic": topic,
                                                            "ack_deadline_seconds": 60}, timeout=30)
                    logging.info("sink %s: created subscription %s on %s", sink.name, name, topic)
    except Exception as exc:  # credentials, permissions, network: one clear line
        problems.append(f"cannot prepare the sinks' subscriptions: {exc}")
    return problems


def check_sink_health(sinks: Sequence[SinkConfig]) -> list[str]:
    """Only sinks with a healthcheck URL: many stores answer GET on the write URL with 405."""
    import requests

    problems = []
    for sink in sinks:
        if not sink.healthcheck.enabled:
            continue
        url = sink.healthcheck.url or sink.url
        try:
            status = requests.get(url, timeout=sink.timeout).status_code
        except requests.RequestException as exc:
            problems.append(f"sink {sink.name}: healthcheck {url} failed: {exc}")
            continue
        if not 200 <= status <= 299:
            problems.append(f"sink {sink.name}: healthcheck {url} answered HTTP {status}")
    return problems


def check_buckets(options: PipelineOptions) -> list[str]:
    """Launch-time check that the archive and dead-letter buckets exist."""
    archive = options.view_as(ArchiveOptions)
    problems = []
    for path in {archive.archive_path, dead_letter_path(archive)}:
        bucket = bucket_of(path) if path.startswith(("gs://", "s3://")) else None
        if not bucket:
            continue
        try:
            exists = _gcs_bucket_exists(bucket, options) if path.startswith("gs://") else _s3_bucket_exists(
                bucket, options)
        except Exception as exc:  # any client failure is reported as a launch error, with its reason
            problems.append(f"cannot check bucket of {path}: {exc}")
            continue
        if not exists:
            problems.append(f"bucket {bucket!r} of {path} does not exist")
    return problems


def _gcs_bucket_exists(bucket: str, options: PipelineOptions) -> bool:
    import os

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    project = options.view_as(GoogleCloudOptions).project
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        client = storage.Client(project=project or "local-project", credentials=AnonymousCredentials())
    else:
        client = storage.Client(project=project)
    return client.lookup_bucket(bucket) is not None


def _s3_bucket_exists(bucket: str, options: PipelineOptions) -> bool:
    import boto3
    from botocore.exceptions import ClientError

    s3 = options.view_as(S3Options)
    client = boto3.client("s3", endpoint_url=s3.s3_endpoint_url, region_name=s3.s3_region_name,
                          aws_access_key_id=s3.s3_access_key_id, aws_secret_access_key=s3.s3_secret_access_key)
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise
    return True


USAGE = "python -m pipeline --input_subscription=projects/PROJECT/subscriptions/NAME [options] [Beam options]"
DESCRIPTION = (
    "Read the receiver's Pub/Sub messages and archive every sample to files, NDJSON (gzip, one line per sample in "
    "Vector's metric_to_log shape) or Parquet (typed columns, zstd), partitioned by tenant and each sample's UTC "
    "date/hour, on a local disk, gs:// or s3://; optionally forward every sample to remote-write sinks "
    "(VictoriaMetrics, Prometheus, Mimir, ...), each from its own subscription. Undecodable messages and samples "
    "a sink refuses go to a dead-letter store. Local runners (DirectRunner) use a loop of bounded runs that ack "
    "Pub/Sub only after the files are finalised; other runners (DataflowRunner) run a streaming job.")


def help_parser() -> argparse.ArgumentParser:
    """--help: this job's flags, then the standard Beam flags that matter here (all others pass through too)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline", usage=USAGE, description=DESCRIPTION,
                                     epilog="Flags may be spelled with - or _ (--metrics-port, --metrics_port). "
                                            "Every other standard Beam option is accepted and passed through.")
    for group_name, options_class in (("archive", ArchiveOptions), ("remote-write sinks", SinkOptions),
                                      ("Beam: runner", StandardOptions),
                                      ("Beam: Google Cloud", GoogleCloudOptions), ("Beam: S3", S3Options)):
        group = parser.add_argument_group(group_name)
        options_class._add_argparse_args(group)
    return parser


def known_flags(parser: argparse.ArgumentParser) -> set[str]:
    """The flag names (no leading dashes) a parser defines: the ones both spellings are accepted for."""
    return {option[2:] for action in parser._actions for option in action.option_strings if option.startswith("--")}


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Beam logs every type hint it cannot use at INFO, burying the pipeline's own lines.
    logging.getLogger("apache_beam.typehints").setLevel(logging.WARNING)
    parser = help_parser()
    argv = respell(sys.argv[1:] if argv is None else argv, "_", known_flags(parser))
    if "-h" in argv or "--help" in argv:
        parser.print_help()
        sys.exit(0)
    options = PipelineOptions(argv)
    archive = options.view_as(ArchiveOptions)
    runner = options.view_as(StandardOptions).runner
    problems = validate(archive)
    if not problems and not is_local(runner):
        for flag, path in (("--archive_path", archive.archive_path), ("--dead_letter_path", dead_letter_path(archive))):
            if not path.startswith(("gs://", "s3://")):
                problems.append(f"{flag} {path!r}: runner {runner} needs gs:// or s3:// (worker disks are temporary)")
    sinks: list[SinkConfig] = []
    try:
        sinks = sinks_from_options(options.view_as(SinkOptions))
    except SinkConfigError as exc:
        problems.append(str(exc))
    problems += credential_problems(sinks)
    problems = problems or check_buckets(options)
    status: StatusServer | None = None
    readiness = Readiness()
    registry = CollectorRegistry(auto_describe=False)  # owned here, filled once the loops exist
    if not problems and is_local(runner):
        # Serve /-/healthy (and a 503 /-/ready) while the slower checks below run.
        try:
            status = StatusServer(archive.metrics_port, registry, readiness)
        except OSError as exc:
            problems.append(f"--metrics_port {archive.metrics_port}: cannot listen on {METRICS_HOST} ({exc.strerror})")
        else:
            status.start()
        problems = problems or check_subscription(archive.input_subscription)
    problems = problems or check_sink_health(sinks) or ensure_sink_subscriptions(archive.input_subscription, sinks)
    if problems:
        for problem in problems:
            print(f"pipeline: {problem}", file=sys.stderr)
        sys.exit(2)
    if status is not None:  # the local runner
        loop = LocalLoop(options)
        loop.install_signal_handlers()
        forwarders = start_forward_loops(sinks, archive.input_subscription, dead_letter_path(archive),
                                         loop.stopping, options)
        registry.register(PipelineCollector(loop, forwarders))
        readiness.archive, readiness.sinks, readiness.subscriptions_checked = loop, forwarders, True
        try:
            loop.run()
        finally:
            loop.stopping.set()
            for forwarder in forwarders:
                forwarder.join()
            status.stop()
        failed = [f.sink.name for f in forwarders if f.error is not None]
        if failed:
            print(f"pipeline: sink loop(s) failed: {', '.join(failed)} (see the log above)", file=sys.stderr)
            sys.exit(1)
        return
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        build_streaming(p, archive, sinks)
