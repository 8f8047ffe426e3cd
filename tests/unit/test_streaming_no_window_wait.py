"""The streaming graph converts each message as it arrives, not when its window closes.

A per-window side input would hold every message of a window until the watermark passes the window's end
(every raw body in memory, the conversion CPU in a burst). Here an event-time timer marks the moment the
watermark reaches a point inside the window; the converting DoFn, observed through a subclass, must have
converted the window's messages before that moment.
"""

from __future__ import annotations

import gzip
import json
import threading

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream as EventStream  # not "Test*": pytest would collect it
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue

from pipeline.graph import WindowByPublishTime, window_pane_label
from tests.unit.test_streaming_windows import BASE, message, tags_in
from transforms.beam import archive
from transforms.core.archive.format import archive_format
from transforms.core.protocol import Protocol
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1

INSIDE_WINDOW = BASE + 45  # the window is [BASE, BASE + 60)
EVENTS: list[str] = []  # the runner works in this process: DoFns and the test share this list
EVENTS_LOCK = threading.Lock()


def record(event: str) -> None:
    with EVENTS_LOCK:
        EVENTS.append(event)


class ObservedDecode(archive.DecodeToRecords):
    def process(self, message, *args, **kwargs):
        yield from super().process(message, *args, **kwargs)
        record(f"converted {message.message_id}")


SEEN = ReadModifyWriteStateSpec("seen", VarIntCoder())
TIMER = TimerSpec("inside_window", TimeDomain.WATERMARK)
SEEN_PARAM, TIMER_PARAM = beam.DoFn.StateParam(SEEN), beam.DoFn.TimerParam(TIMER)


class MarkWatermark(beam.DoFn):
    """Records when the watermark reaches INSIDE_WINDOW (an event-time timer)."""

    def process(self, element, seen=SEEN_PARAM, timer=TIMER_PARAM):
        if not seen.read():
            seen.write(1)
            timer.set(INSIDE_WINDOW)

    @on_timer(TIMER)
    def reached(self):
        record("watermark inside window")


def metadata_message() -> PubsubMessage:
    request = build_v1([], metadata=[Series({"__name__": "m"}, metric_type="counter")])
    attributes = codec.message_attributes(Protocol.V1, "default", "x", codec.count(request))
    return PubsubMessage(codec.encode(request), attributes, message_id="metadata")


def test_messages_are_converted_while_their_window_is_still_open(tmp_path, monkeypatch):
    monkeypatch.setattr(archive, "DecodeToRecords", ObservedDecode)
    EVENTS.clear()
    sample_ms = BASE * 1000 + 5_000
    stream = (EventStream()
              .advance_watermark_to(BASE)
              .add_elements([TimestampedValue(metadata_message(), BASE + 5),
                             TimestampedValue(message("first", sample_ms), BASE + 10)])
              .advance_watermark_to(BASE + 20)
              .add_elements([TimestampedValue(message("second", sample_ms), BASE + 30)])
              .advance_watermark_to(INSIDE_WINDOW + 1)
              .advance_watermark_to(BASE + 70)
              .advance_watermark_to_infinity())
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        messages = p | stream
        _ = (messages | beam.Map(lambda m: (None, 1)) | beam.ParDo(MarkWatermark()))
        _ = (messages
             | WindowByPublishTime(window_size=60, allowed_lateness=3600)
             | archive.ArchiveMessages(str(tmp_path), str(tmp_path / "_dead_letters"), file_label=window_pane_label,
                                       window_types=False))
    mark = EVENTS.index("watermark inside window")
    assert {"converted first", "converted second"} <= set(EVENTS[:mark]), EVENTS
    # the metadata-only message, converted first, typed the samples after it: types need no side input
    files = list((tmp_path / "tenant=default" / "date=2026-11-25" / "hour=09").glob(archive_format("ndjson").glob()))
    assert [tags_in(f) for f in files] == [["first", "second"]]
    kinds = {kind for line in gzip.decompress(files[0].read_bytes()).splitlines() for kind in json.loads(line)}
    assert "counter" in kinds and "gauge" not in kinds
