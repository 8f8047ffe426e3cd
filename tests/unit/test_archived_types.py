"""A new streaming worker starts from the metric types in the archive's metadata companion files."""

from __future__ import annotations

import gzip
import json
import time

from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.utils.shared import Shared

from transforms.beam.archive import DecodeToRecords
from transforms.core.archive.format import FORMATS, partition_parts
from transforms.core.archive.lines import hour_partition
from transforms.core.archive.records import METADATA_DIR, MetadataRecord
from transforms.core.protocol import Protocol
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1
from transforms.io.archived_types import recent_types

NOW_MS = int(time.time() * 1000)
HOUR = NOW_MS // 3_600_000


def write_companion(archive, tenant: str, hour: int, records: list[MetadataRecord], fmt: str = "ndjson",
                    label: str = "a") -> None:
    directory = archive.joinpath(METADATA_DIR, *partition_parts(hour_partition(tenant, hour)))
    directory.mkdir(parents=True, exist_ok=True)
    archive_format = FORMATS[fmt]
    (directory / archive_format.file_name(label, 0)).write_bytes(archive_format.encode_metadata(records))


def test_recent_types_take_the_latest_record_of_the_last_two_hours_per_tenant(tmp_path):
    write_companion(tmp_path, "default", HOUR - 1, [MetadataRecord("jobs", 1, "gauge", "", ""),
                                                    MetadataRecord("requests", 1, "counter", "", "")])
    write_companion(tmp_path, "default", HOUR, [MetadataRecord("jobs", 2, "counter", "", "")], fmt="parquet")
    write_companion(tmp_path, "team-b", HOUR, [MetadataRecord("latency", 5, "histogram", "", "")])
    write_companion(tmp_path, "old", HOUR - 5, [MetadataRecord("gone", 1, "counter", "", "")])  # too old
    broken = tmp_path.joinpath(METADATA_DIR, *partition_parts(hour_partition("default", HOUR)), "part-x-0000.ndjson.gz")
    broken.write_bytes(b"not gzip")  # skipped with a warning, never fatal
    assert recent_types(str(tmp_path), NOW_MS) == {"default": {"jobs": "counter", "requests": "counter"},
                                                   "team-b": {"latency": "histogram"}}


def test_an_archive_with_no_metadata_yet_gives_no_types(tmp_path):
    assert recent_types(str(tmp_path / "not-created"), NOW_MS) == {}


def test_a_new_worker_types_samples_from_the_archive_before_any_metadata_request(tmp_path):
    write_companion(tmp_path, "default", HOUR, [MetadataRecord("requests", 1, "counter", "", "")])
    request = build_v1([Series({"__name__": "requests_total", "job": "a"}, [(NOW_MS, 3.0)])])
    message = PubsubMessage(codec.encode(request), codec.message_attributes(Protocol.V1, "default", "x",
                                                                            codec.count(request)))
    decode = DecodeToRecords(Shared(), "ndjson", warm_types_from=str(tmp_path))
    decode.setup()
    decode.start_bundle()
    blocks = [block for _, block in decode.process(message)]
    lines = [json.loads(line) for block in blocks for line in gzip.decompress(block.data).splitlines()]
    assert [line["name"] for line in lines] == ["requests_total"]
    assert "counter" in lines[0] and "gauge" not in lines[0], lines[0]
