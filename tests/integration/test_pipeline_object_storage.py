"""The same archive code path on GCS (gcp-storage-emulator) and S3 (moto server), and launch checks."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from tests.pipeline_helpers import LoopThread, requests_for
from tools import services
from tools.archive import archive_files, dead_letter_files, read_archive
from tools.pubsub import publish_raw, publish_requests


@pytest.mark.parametrize("store", ["gcs", "s3"])
def test_archive_and_dead_letters_on_object_storage(store, request, topic_and_subscription):
    extra = request.getfixturevalue(store)
    scheme = "gs" if store == "gcs" else "s3"
    archive = f"{scheme}://archive-bucket/prom/{time.time_ns()}"
    topic, subscription = topic_and_subscription
    publish_requests(topic, [(r, "team-a") for r in requests_for(30, per=20)])
    publish_raw(topic, b"garbage", {"protocol": "2.0", "tenant": "team-a"})
    with LoopThread(subscription.path, archive, extra=tuple(extra)) as loop:
        services.wait_until(lambda: sum(run["lines"] for run in loop.runs) >= 600
                            and sum(run["dead_letters"] for run in loop.runs) >= 1, 90, "archive on " + store,
                            interval=0.5)
    FileSystems.set_options(PipelineOptions(extra))
    files = read_archive(archive)
    lines = [line for lines in files.values() for line in lines]
    assert sorted(line["gauge"]["value"] for line in lines) == [float(v) for v in range(600)]
    assert all(path.startswith(f"{archive}/tenant=team-a/date=") and "/hour=" in path for path in files)
    assert len(dead_letter_files(f"{archive}/_dead_letters")) == 1
    # temp objects were renamed away: only finalised files remain
    leftovers = FileSystems.match([f"{archive}/.tmp/*"])[0].metadata_list
    assert leftovers == []
    assert archive_files(archive) == sorted(files)


def run_pipeline(*args: str) -> subprocess.CompletedProcess:
    runner = [] if any(a.startswith("--runner") for a in args) else ["--runner=DirectRunner"]
    return subprocess.run([sys.executable, "-m", "pipeline", *runner, "--metrics_port=0", *args],
                          capture_output=True, text=True, timeout=120, cwd=services.ROOT)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--input_subscription=not-a-path"], "projects/PROJECT/subscriptions/NAME"),
        ([], "--input_subscription is required"),
        (["--input_subscription=projects/p/subscriptions/sub", "--archive_path=ftp://x/y"], "unsupported URL scheme"),
        (["--input_subscription=projects/p/subscriptions/sub", "--window_size=0"], "--window_size"),
        (["--input_subscription=projects/p/subscriptions/sub", "--remote_write_url=ftp://x/"], "must be http://"),
        (["--input_subscription=projects/p/subscriptions/sub", "--remote_write_url=http://x/",
          "--remote_write_header=User-Agent: me"], "'User-Agent' is reserved"),
        (["--input_subscription=projects/p/subscriptions/sub", "--remote_write_config=/no/such/sinks.yaml"],
         "cannot read --remote_write_config"),
    ],
)
def test_invalid_options_fail_at_launch_with_a_clear_message(args, message):
    result = run_pipeline(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_bucket_fails_at_launch(gcs, s3):
    gcs_result = run_pipeline("--input_subscription=projects/p/subscriptions/sub",
                              "--archive_path=gs://no-such-bucket/x", *gcs)
    assert gcs_result.returncode == 2 and "bucket 'no-such-bucket'" in gcs_result.stderr, gcs_result.stderr
    s3_result = run_pipeline("--input_subscription=projects/p/subscriptions/sub",
                             "--archive_path=s3://no-such-bucket/x", *s3)
    assert s3_result.returncode == 2 and "bucket 'no-such-bucket'" in s3_result.stderr, s3_result.stderr


def test_help_documents_every_archive_flag():
    result = run_pipeline("--help")
    assert result.returncode == 0
    for flag in ("--input_subscription", "--archive_path", "--window_size", "--dead_letter_path",
                 "--max_lines_per_file", "--max_batch_samples", "--allowed_lateness", "--runner"):
        assert flag in result.stdout


def test_streaming_runner_needs_object_storage():
    result = run_pipeline("--input_subscription=projects/p/subscriptions/sub", "--runner=DataflowRunner")
    assert result.returncode == 2 and "needs gs:// or s3://" in result.stderr


def test_missing_subscription_fails_at_launch(pubsub_emulator):
    result = run_pipeline("--input_subscription=projects/test-project/subscriptions/no-such-sub")
    assert result.returncode == 2 and "does not exist" in result.stderr, result.stderr


@pytest.mark.parametrize("runner,local", [(None, True), ("DirectRunner", True), ("direct", True),
                                          ("BundleBasedDirectRunner", True), ("prism", True),
                                          ("DataflowRunner", False), ("dataflow", False)])
def test_runner_aliases_choose_the_local_loop(runner, local):
    from pipeline.options import is_local

    assert is_local(runner) is local
