"""The local loop's bounded run builds its graph once and runs it per window with that window's batch and label."""

from __future__ import annotations

from pathlib import Path

from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.utils.shared import Shared

from pipeline.bounded_run import BoundedArchiveRun
from tests.pipeline_helpers import all_lines, requests_for
from transforms.core.protocol import Protocol
from transforms.core.wire import codec


def messages(tag: str, count: int) -> list[PubsubMessage]:
    return [PubsubMessage(codec.encode(request),
                          codec.message_attributes(Protocol.V1, "default", "2026-11-24T00:00:00.000Z",
                                                   codec.count(request)),
                          message_id=f"{tag}-{i}", publish_time=None)
            for i, request in enumerate(requests_for(count, per=20, tag=tag))]


def test_later_runs_reuse_the_first_graph_and_write_their_own_batch_under_their_own_label(tmp_path: Path):
    options = PipelineOptions([f"--archive_path={tmp_path / 'archive'}",
                               "--input_subscription=projects/p/subscriptions/s"])
    options.view_as(StandardOptions).streaming = False
    bounded = BoundedArchiveRun(options, Shared())
    try:
        first = bounded.run("run-one", messages("a", 3))
        graph = bounded.runner.graph
        second = bounded.run("run-two", messages("b", 2))
        assert bounded.runner.graph is graph  # translated once
    finally:
        bounded.close()
    assert first["samples_converted"] == 60 and second["samples_converted"] == 40
    names = sorted(p.name for p in (tmp_path / "archive").rglob("*") if p.is_file())
    assert any("run-one" in n for n in names) and any("run-two" in n for n in names)
    reqs = sorted({line["tags"]["req"] for line in all_lines(tmp_path / "archive")})
    assert reqs == ["a0", "a1", "a2", "b0", "b1"]  # each run archived its own batch, nothing twice
    assert len(all_lines(tmp_path / "archive")) == 100
    assert not Path(bounded.directory).exists()
