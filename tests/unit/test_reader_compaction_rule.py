"""The remote-read reader lists a partition through the compaction marker rule: old files or new, never both."""

from __future__ import annotations

from transforms.core.archive.compaction import Marker
from transforms.io.archive_read import ArchiveReader

HOUR_MS = 3_600_000
T0 = 1_764_576_000_000  # 2025-12-01T08:00:00Z


def partition(tmp_path, names: list[str]):
    folder = tmp_path / "tenant=default" / "date=2025-12-01" / "hour=08"
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"PAR1")
    return folder


def listed(tmp_path) -> list[str]:
    return [path.rsplit("/", 1)[1] for path in ArchiveReader(str(tmp_path)).files("default", T0, T0 + HOUR_MS - 1)]


def test_a_complete_compaction_hides_its_inputs(tmp_path):
    inputs = ["part-a.parquet", "part-b.parquet"]
    marker = Marker.new(inputs, files=1)
    folder = partition(tmp_path, [*inputs, *marker.outputs])
    (folder / marker.name).write_bytes(marker.to_json())
    assert listed(tmp_path) == list(marker.outputs)


def test_an_incomplete_compaction_hides_its_outputs(tmp_path):
    inputs = ["part-a.parquet", "part-b.parquet"]
    marker = Marker.new(inputs, files=2)
    folder = partition(tmp_path, [*inputs, marker.outputs[0]])  # the second compacted file never came
    (folder / marker.name).write_bytes(marker.to_json())
    assert listed(tmp_path) == inputs


def test_without_markers_every_parquet_file_is_read(tmp_path):
    partition(tmp_path, ["part-a.parquet", "part-b.parquet", "part-c.ndjson.gz"])
    assert listed(tmp_path) == ["part-a.parquet", "part-b.parquet"]
