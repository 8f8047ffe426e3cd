"""The streaming graph (Dataflow and other streaming runners): Beam's native Pub/Sub read.

Elements are timestamped with their Pub/Sub publish time and windowed by it, so a backlog is
not late data; files are partitioned by each sample's own time, so old samples are not either.
Late panes still fire (allowed lateness), each into files of its own: the label carries the
window and the pane index, so a re-fired pane never overwrites an earlier file.
Messages are converted as they arrive, never held for their window: metric types come from the worker's
store (fed by metadata-only messages as they pass, warmed from the archive's metadata companion files).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.transforms import trigger, window

from pipeline.options import ArchiveOptions, dead_letter_path
from transforms.beam import ArchiveMessages, ForwardToSink
from transforms.core.sink.config import SinkConfig


def window_pane_label(win: Any, pane: Any) -> str:
    """Deterministic per window and pane (a retried bundle rewrites the same file, never a new one)."""
    start = win.start.to_utc_datetime().strftime("%Y%m%dT%H%M%SZ")
    seconds = int(win.end.micros - win.start.micros) // 1_000_000
    return f"{start}-{seconds}s-pane{pane.index}"


class WindowByPublishTime(beam.PTransform):
    def __init__(self, window_size: int, allowed_lateness: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.allowed_lateness = allowed_lateness

    def expand(self, messages):
        return messages | "FixedWindows" >> beam.WindowInto(
            window.FixedWindows(self.window_size),
            trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
            allowed_lateness=self.allowed_lateness,
            accumulation_mode=trigger.AccumulationMode.DISCARDING,
        )


def build_streaming(p: beam.Pipeline, options: ArchiveOptions, sinks: Sequence[SinkConfig] = ()) -> Any:
    """The archive branch, plus one branch per sink on the sink's own subscription (named by the sink)."""
    archived = (p
                | "ReadPubSub" >> beam.io.ReadFromPubSub(subscription=options.input_subscription,
                                                         with_attributes=True)
                | "WindowByPublishTime" >> WindowByPublishTime(options.window_size, options.allowed_lateness)
                | "Archive" >> ArchiveMessages(options.archive_path, dead_letter_path(options),
                                               file_label=window_pane_label,
                                               max_lines_per_file=options.max_lines_per_file,
                                               archive_format=options.archive_format, window_types=False))
    build_sink_branches(p, options, sinks)
    return archived


def build_sink_branches(p: beam.Pipeline, options: ArchiveOptions, sinks: Sequence[SinkConfig]) -> None:
    """One branch per sink, reading the sink's own subscription (named by the sink)."""
    for sink in sinks:
        _ = (p
             | f"ReadPubSub-{sink.name}" >> beam.io.ReadFromPubSub(
                 subscription=sink.subscription_for(options.input_subscription), with_attributes=True)
             | f"Forward-{sink.name}" >> ForwardToSink(sink, dead_letter_path(options)))
