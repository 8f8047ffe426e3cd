"""Shared fixtures: real services started by the tests on 127.0.0.1, stopped by PID afterwards."""

from __future__ import annotations

import http.server
import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools import services
from tools.pubsub import Subscription

PROJECT = "test-project"
S3_KEYS = ["--s3_access_key_id=testing", "--s3_secret_access_key=testing", "--s3_region_name=us-east-1"]
_names = itertools.count()


# Each folder is a tier; its name is the marker (registered in pytest.ini), so `-m unit` is the quick tier.
TIERS = ("unit", "integration", "e2e", "faults")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent
    for item in items:
        folder = item.path.relative_to(tests_dir).parts[0] if item.path.is_relative_to(tests_dir) else ""
        if folder in TIERS:
            item.add_marker(folder)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("service-logs")


@pytest.fixture(scope="session")
def pubsub_emulator(log_dir) -> Iterator[str]:
    """One Pub/Sub emulator for the session; yields its host:port."""
    service, host = services.start_pubsub_emulator(log_dir)
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = host
    try:
        yield host
    finally:
        service.stop()
        if previous is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = previous


@pytest.fixture
def topic_and_subscription(pubsub_emulator) -> Iterator[tuple[str, Subscription]]:
    """A fresh topic with one pull subscription."""
    n = next(_names)
    topic = f"projects/{PROJECT}/topics/remote-write-{n}"
    subscription = f"projects/{PROJECT}/subscriptions/remote-write-{n}-sub"
    services.create_topic_and_subscription(pubsub_emulator, topic, subscription)
    with Subscription(subscription) as sub:
        yield topic, sub


@pytest.fixture(scope="module")
def gcs(log_dir) -> Iterator[list[str]]:
    """A GCS emulator (per test module) with the bucket "archive-bucket"; yields the Beam flags to reach it."""
    service, url = services.start_gcs_emulator(log_dir)
    saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "NO_GCE_CHECK")}
    os.environ.update(STORAGE_EMULATOR_HOST=url, NO_GCE_CHECK="true")
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    storage.Client(project=PROJECT, credentials=AnonymousCredentials()).create_bucket("archive-bucket")
    try:
        yield [f"--project={PROJECT}", "--no_auth"]
    finally:
        service.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def capture() -> Iterator[str]:
    """A capture server (tests.sink_helpers.Capture) on a free port; yields its push URL."""
    from tests.sink_helpers import Capture

    Capture.answers, Capture.seen = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/push"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def s3(log_dir) -> Iterator[list[str]]:
    """A moto S3 server (per test module) with the bucket "archive-bucket"; yields the Beam flags to reach it."""
    service, url = services.start_moto(log_dir)
    import boto3

    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="archive-bucket")
    try:
        yield [f"--s3_endpoint_url={url}", *S3_KEYS]
    finally:
        service.stop()
