"""Metric metadata (type, help, unit) archived beside the samples: ARCHIVE/_metadata/<partition>/, both formats."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils.shared import Shared

from tools.archive import read_archive
from transforms.beam import ArchiveMessages
from transforms.core.archive.format import FORMATS, archive_format
from transforms.core.archive.records import MetadataRecord, RecordError
from transforms.core.metadata import MetadataStore
from transforms.core.protocol import Protocol
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1, build_v2

T0 = 1_795_597_200_000  # 2026-11-25T09:00:00Z
SEEN = datetime(2026, 11, 25, 10, 15, 30, 250000, tzinfo=UTC)  # publish time: the hour metadata is filed under


def messages(label: str) -> list[PubsubMessage]:
    metadata_only = build_v1([], metadata=[
        Series({"__name__": "jobs_total"}, metric_type="counter", help="Jobs run.", unit=""),
        Series({"__name__": "latency_seconds"}, metric_type="summary", help="How long — in seconds.", unit="seconds"),
    ])
    samples = build_v1([Series({"__name__": "jobs_total", "job": "a"}, [(T0, 1.0)])])
    v2 = build_v2([Series({"__name__": "temp_celsius", "job": "b"}, [(T0 + 1, 21.5)], metric_type="gauge",
                          help="Temperature.", unit="celsius"),
                  Series({"__name__": "temp_celsius", "job": "c"}, [(T0 + 2, 20.0)], metric_type="gauge",
                          help="Temperature.", unit="celsius")])
    out = []
    for i, (m, protocol) in enumerate([(metadata_only, Protocol.V1), (samples, Protocol.V1), (v2, Protocol.V2),
                                       (metadata_only, Protocol.V1), (v2, Protocol.V2)]):
        out.append(PubsubMessage(codec.encode(m), codec.message_attributes(protocol, "default", "x", codec.count(m)),
                                 message_id=f"{label}-{i}", publish_time=SEEN))
    return out


def run(archive: Path, label: str, fmt: str, held: Shared) -> None:
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        _ = p | beam.Create(messages(label)) | ArchiveMessages(str(archive), str(archive / "_dead"),
                                                               file_label=lambda window, pane: label,
                                                               archive_format=fmt, metadata=held)


def metadata_files(archive: Path) -> list[Path]:
    return sorted(p for p in (archive / "_metadata").rglob("part-*") if p.is_file())


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_metadata_is_archived_once_per_family_and_hour_beside_the_samples(tmp_path, fmt):
    held = Shared()
    store = held.acquire(MetadataStore)  # the loop's strong reference, as LocalLoop keeps it
    run(tmp_path, "first", fmt, held)
    (path,) = metadata_files(tmp_path)
    assert path.relative_to(tmp_path).parts[:4] == ("_metadata", "tenant=default", "date=2026-11-25", "hour=10")
    records = archive_format(fmt).read_metadata(path.read_bytes())
    seen = int(SEEN.timestamp() * 1000)
    assert sorted(records) == [  # 1.0 entries by family; 2.0 per-series metadata by metric name; each once
        MetadataRecord("jobs_total", seen, "counter", "Jobs run.", ""),
        MetadataRecord("latency_seconds", seen, "summary", "How long — in seconds.", "seconds"),
        MetadataRecord("temp_celsius", seen, "gauge", "Temperature.", "celsius"),
    ]
    # the samples' files hold samples only: the README's queries and tools count what they did
    lines = [line for lines in read_archive(str(tmp_path), fmt).values() for line in lines]
    assert len(lines) == 5 and all("help" not in line and "name" in line for line in lines)

    run(tmp_path, "second", fmt, held)  # the same hour, the same worker process: nothing new to archive
    assert len(metadata_files(tmp_path)) == 1
    store.forget_archived()  # what the local loop does when a run fails: its retry archives them again
    run(tmp_path, "third", fmt, held)
    assert len(metadata_files(tmp_path)) == 2


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_metadata_files_round_trip_and_reject_foreign_bytes(fmt):
    chosen = archive_format(fmt)
    records = [MetadataRecord("b_total", T0 + 5, "counter", "Line one\nline \"two\"", ""),
               MetadataRecord("a", T0, "unknown", "", "bytes")]
    assert chosen.read_metadata(chosen.encode_metadata(records)) == sorted(records)
    with pytest.raises(Exception):  # noqa: B017 - any clear error; the restore names the file and skips it
        chosen.read_metadata(b"not an archive file")
    if fmt == "ndjson":
        import gzip
        with pytest.raises(RecordError, match="shape"):
            chosen.read_metadata(gzip.compress(b'{"name":"x"}\n'))
