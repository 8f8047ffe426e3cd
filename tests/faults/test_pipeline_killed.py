"""Fault 3.2: `python -m pipeline` (archive + a VictoriaMetrics sink) killed with SIGKILL mid-window
under steady load, then restarted. The archive and the sink hold every sample; what the kill made
Pub/Sub redeliver is counted and reported as duplicates (at-least-once), never a failure."""

from __future__ import annotations

import time

from tests.fault_helpers import (
    SteadyPublisher,
    archive_seen,
    compare,
    count,
    expected_samples,
    fault_requests,
    kill9,
    start_pipeline,
    vm_seen,
)
from tests.sink_helpers import BASE_MS
from tools import services
from tools.run_local import scrape, total

REQUESTS, SERIES, PER_SECOND = 80, 50, 4.0


def test_pipeline_killed_mid_window_archive_and_sink_get_everything(log_dir, pubsub_emulator,
                                                                    topic_and_subscription, tmp_path):
    topic, subscription = topic_and_subscription
    archive = tmp_path / "archive"
    victoria, vm_url = services.start_victoria_metrics(log_dir, name="vm-pipeline-killed")
    port = services.free_port()
    metrics_url = f"http://{services.LOOPBACK}:{port}"
    flags = (f"--remote_write_url={vm_url}/api/v1/write",)
    publisher = SteadyPublisher(topic, fault_requests("killed", REQUESTS, SERIES, BASE_MS), PER_SECOND)
    pipeline = start_pipeline(log_dir, "pipeline-killed-1", subscription.path, archive, port, flags)
    try:
        publisher.start()

        def mid_window() -> bool:
            """A window has been archived and delivered, and the open one holds pulled, unarchived messages."""
            found = scrape(metrics_url)
            assert not isinstance(found, str), found
            return (total(found, "pipeline_archive_runs_total") >= 1
                    and total(found, "pipeline_sink_samples_sent_total") > 0
                    and total(found, "pipeline_pulled_messages_total", consumer="archive")
                    > total(found, "pipeline_archive_messages_total"))

        services.wait_until(mid_window, 60, "the pipeline to be mid-window", interval=0.2)
        before = scrape(metrics_url)
        held = (total(before, "pipeline_pulled_messages_total", consumer="archive")
                - total(before, "pipeline_archive_messages_total"))
        killed_at = time.monotonic()
        kill9(pipeline)
        pipeline = start_pipeline(log_dir, "pipeline-killed-2", subscription.path, archive, port, flags)
        publisher.finish(120)
        expected = expected_samples("killed", REQUESTS, SERIES, BASE_MS)
        wanted = REQUESTS * SERIES

        def archived_all() -> bool:
            return not compare(expected, archive_seen(archive))[0]

        def delivered_all() -> bool:
            return not compare(expected, vm_seen(vm_url, '{__name__="killed_metric"}'))[0]

        services.wait_until(archived_all, 150, "every sample in the archive", interval=1.0)
        recovered = time.monotonic() - killed_at
        services.wait_until(delivered_all, 60, "every sample in VictoriaMetrics", interval=1.0)
        delivered = vm_seen(vm_url, '{__name__="killed_metric"}')
    finally:
        publisher.halt.set()
        pipeline.stop()
        victoria.stop()
    archived = archive_seen(archive)
    missing, archive_duplicates = compare(expected, archived)
    assert not missing and count(archived) == wanted + archive_duplicates
    missing, sink_duplicates = compare(expected, delivered)
    assert not missing and count(delivered) == wanted + sink_duplicates
    print(f"\npipeline killed holding {held:.0f} pulled messages: {wanted} samples; archive +{archive_duplicates} "
          f"duplicates, VictoriaMetrics +{sink_duplicates} duplicates; all archived {recovered:.0f} s after the kill")
