"""The streaming graph's windowing with TestStream: publish-time windows, late panes, file naming."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream as EventStream  # not "Test*": pytest would collect it
from apache_beam.transforms.window import TimestampedValue

from pipeline.graph import WindowByPublishTime, window_pane_label
from transforms.beam import ArchiveMessages
from transforms.core.archive.format import archive_format
from transforms.core.protocol import Protocol
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1

ARCHIVE_FORMAT = archive_format("ndjson")
BASE = 1_795_597_200  # 2026-11-25T09:00:00Z, a window boundary for 60 s windows


def message(tag: str, sample_ms: int) -> PubsubMessage:
    request = build_v1([Series({"__name__": "m", "tag": tag}, [(sample_ms, 1.0)])])
    attributes = codec.message_attributes(Protocol.V1, "default", "x", codec.count(request))
    return PubsubMessage(codec.encode(request), attributes, message_id=tag)


def run(stream: EventStream, archive: Path) -> None:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        _ = (p
             | stream
             | WindowByPublishTime(window_size=60, allowed_lateness=3600)
             | ArchiveMessages(str(archive), str(archive / "_dead_letters"), file_label=window_pane_label))


def tags_in(path: Path) -> list[str]:
    return sorted(json.loads(line)["tags"]["tag"] for line in gzip.decompress(path.read_bytes()).splitlines())


def test_late_pane_adds_a_file_and_never_overwrites_the_on_time_one(tmp_path):
    sample_ms = BASE * 1000 + 5_000
    stream = (EventStream()
              .advance_watermark_to(BASE)
              .add_elements([TimestampedValue(message("on-time-1", sample_ms), BASE + 10),
                             TimestampedValue(message("on-time-2", sample_ms), BASE + 20)])
              .advance_watermark_to(BASE + 70)  # window [BASE, BASE+60) fires on time: pane 0
              .add_elements([TimestampedValue(message("late", sample_ms), BASE + 30)])  # late, within lateness
              .advance_watermark_to(BASE + 200)
              .advance_watermark_to_infinity())
    run(stream, tmp_path)
    files = sorted((tmp_path / "tenant=default" / "date=2026-11-25" / "hour=09").glob(ARCHIVE_FORMAT.glob()))
    names = [f.name for f in files]
    assert names == ["part-20261125T090000Z-60s-pane0-0000.ndjson.gz",
                     "part-20261125T090000Z-60s-pane1-0000.ndjson.gz"]
    assert tags_in(files[0]) == ["on-time-1", "on-time-2"]  # the on-time file is intact
    assert tags_in(files[1]) == ["late"]


def test_windows_follow_publish_time_and_files_follow_sample_time(tmp_path):
    """A backlog of old samples published now lands in the sample's own hour, not as late data."""
    five_hours_ago_ms = (BASE - 5 * 3600) * 1000
    stream = (EventStream()
              .advance_watermark_to(BASE)
              .add_elements([TimestampedValue(message("old-sample", five_hours_ago_ms), BASE + 1),
                             TimestampedValue(message("next-window", BASE * 1000), BASE + 61)])
              .advance_watermark_to_infinity())
    run(stream, tmp_path)
    old = list((tmp_path / "tenant=default" / "date=2026-11-25" / "hour=04").glob(ARCHIVE_FORMAT.glob()))
    new = list((tmp_path / "tenant=default" / "date=2026-11-25" / "hour=09").glob(ARCHIVE_FORMAT.glob()))
    assert [tags_in(f) for f in old] == [["old-sample"]]
    assert old[0].name.startswith("part-20261125T090000Z-60s-pane0")  # published in the first window
    assert [tags_in(f) for f in new] == [["next-window"]]
    assert new[0].name.startswith("part-20261125T090100Z-60s-pane0")  # the next window
