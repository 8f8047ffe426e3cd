"""The Dataflow path, run and not only drawn: `pipeline.graph.build_streaming` end to end on Beam's
streaming local runner (BundleBasedDirectRunner --streaming) against the Pub/Sub emulator, with one
VictoriaMetrics sink. What a --dry_run graph cannot catch (coders, pickling of the DoFns and their
sink config, GroupIntoBatches' per-key state) fails here.

This runner reads 10 messages per pull, moves its watermark only while messages arrive, and fires
GroupIntoBatches' processing-time flush only when more input comes (platform facts), so the test
keeps publishing small feeder messages until the archive and the sink hold every sample it checks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.graph import build_streaming
from pipeline.options import ArchiveOptions
from tests.conftest import PROJECT
from tests.sink_helpers import vm_export
from tools import services
from tools.archive import read_archive
from tools.pubsub import publish_requests
from transforms.core.sink import config
from transforms.core.wire.builders import Series, build_v1

MESSAGES, SERIES = 30, 20
FEED_EVERY = 0.5


@pytest.fixture
def victoria(log_dir) -> Iterator[str]:
    service, url = services.start_victoria_metrics(log_dir, name="vm-streaming-smoke")
    yield url
    service.stop()


def test_the_streaming_graph_archives_and_forwards_every_sample_on_the_local_streaming_runner(
        pubsub_emulator, victoria, tmp_path):
    topic = f"projects/{PROJECT}/topics/streaming-smoke"
    subscription = f"projects/{PROJECT}/subscriptions/streaming-smoke"
    services.create_topic_and_subscription(pubsub_emulator, topic, subscription)
    sink = config.from_document(f'{{"remote_write": [{{"url": "{victoria}/api/v1/write", "name": "vm", '
                                f'"queue_config": {{"batch_send_deadline": "1s"}}}}]}}')[0]
    services.create_subscription(pubsub_emulator, topic, sink.subscription_for(subscription))
    archive = tmp_path / "archive"
    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming",
                               f"--input_subscription={subscription}", f"--archive_path={archive}", "--window_size=2"])
    pipeline = beam.Pipeline(options=options)
    build_streaming(pipeline, options.view_as(ArchiveOptions), [sink])
    result = pipeline.run()  # returns at once: the runner works in its own threads
    now_ms = int(time.time() * 1000)
    expected = {(str(i), now_ms + m): float(m * SERIES + i) for m in range(MESSAGES) for i in range(SERIES)}
    stop_feeding = threading.Event()

    def feed() -> None:  # more input: moves the watermark and fires GroupIntoBatches' buffered flush
        n = 0
        while not stop_feeding.wait(FEED_EVERY):
            n += 1
            publish_requests(topic, [(build_v1([Series({"__name__": "smoke_feed"}, [(int(time.time() * 1000), n)])]),
                                      "default")])

    feeder = threading.Thread(target=feed, daemon=True)
    try:
        publish_requests(topic, [(build_v1([Series({"__name__": "smoke_metric", "i": str(i)},
                                                   [(now_ms + m, float(m * SERIES + i))]) for i in range(SERIES)]),
                                  "default") for m in range(MESSAGES)])
        feeder.start()

        def archived() -> dict[tuple[str, int], float]:
            lines = [line for path_lines in read_archive(str(archive)).values() for line in path_lines
                     if line["name"] == "smoke_metric"]
            return {(line["tags"]["i"], _ms(line["timestamp"])): line["gauge"]["value"] for line in lines}

        def delivered() -> dict[tuple[str, int], float]:
            return {(dict(key)["i"], t): v for key, points in vm_export(victoria, "smoke_metric").items()
                    for t, v in points}

        services.wait_until(lambda: archived() == expected and delivered() == expected, 75,
                            "every sample archived and in VictoriaMetrics", interval=1.0)
        assert not list(archive.rglob("dead-*.ndjson")), "nothing dead-lettered"
    finally:
        stop_feeding.set()
        result.cancel()


def _ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
