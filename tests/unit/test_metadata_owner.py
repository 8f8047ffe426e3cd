"""The remembered 1.0 metadata has an owner: a Beam Shared handle, held across bounded runs."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils.shared import Shared

from tools.archive import read_archive
from transforms.beam import ArchiveMessages
from transforms.core.metadata import MetadataStore
from transforms.core.protocol import Protocol
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1

T0 = 1_795_597_200_000


def run(messages: list, archive: Path, label: str, metadata: Shared) -> None:
    encoded = [PubsubMessage(codec.encode(m), codec.message_attributes(Protocol.V1, "default", "x", codec.count(m)),
                             message_id=f"{label}-{i}") for i, m in enumerate(messages)]
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        _ = p | beam.Create(encoded) | ArchiveMessages(str(archive), str(archive / "_dead"),
                                                       file_label=lambda window, pane: label, metadata=metadata)


def kinds(archive: Path, label: str) -> set[str]:
    return {("counter" if "counter" in line else "gauge") for path, lines in read_archive(str(archive)).items()
            if label in path for line in lines}


def test_types_told_in_one_bounded_run_type_the_samples_of_the_next(tmp_path):
    metadata_only = build_v1([], metadata=[Series({"__name__": "jobs_total"}, metric_type="counter")])
    samples = build_v1([Series({"__name__": "jobs_total", "job": "a"}, [(T0, 1.0)])])
    held = Shared()
    store = held.acquire(MetadataStore)  # the loop's strong reference, as LocalLoop keeps it
    run([metadata_only], tmp_path, "first", held)
    assert store.type_of("default", "jobs_total") == "counter"
    run([samples], tmp_path, "second", held)
    assert kinds(tmp_path, "second") == {"counter"}
    run([samples], tmp_path, "stranger", Shared())  # another owner knows nothing
    assert kinds(tmp_path, "stranger") == {"gauge"}
