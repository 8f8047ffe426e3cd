"""Compaction of one hour partition on any Beam filesystem (local disk, gs://, s3://): the protocol's steps
(transforms/core/archive/compaction.py) carried out, each durable before the next begins."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.core.archive.compaction import (
    INPUT_SUFFIXES,
    MARKER_PREFIX,
    MARKER_SUFFIX,
    Marker,
    basename,
    compact_table,
    compacted_files,
    file_table,
    plan_partition,
)
from transforms.core.archive.format import PARTITION_GLOB
from transforms.io.files import read_whole, write_atomically

# Test hook: the process dies (as kill -9 would: no cleanup, no flush) right after the named step, so the
# crash-safety tests can stop a real run between any two steps: marker | outputs | inputs.
CRASH_AFTER_ENV = "ARCHIVE_COMPACTION_CRASH_AFTER"


@dataclasses.dataclass
class PartitionResult:
    partition: str
    inputs: int = 0  # files replaced
    outputs: int = 0  # compacted files written
    rows: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    finished: int = 0  # compactions a crashed run left complete, finished here
    undone: int = 0  # compactions a crashed run left incomplete, undone (then redone) here


def _step_done(step: str) -> None:
    if os.environ.get(CRASH_AFTER_ENV) == step:
        os._exit(137)


def partitions(archive_path: str) -> list[str]:
    """Every tenant=/date=/hour= folder holding files, sorted."""
    found = FileSystems.match([FileSystems.join(archive_path, *PARTITION_GLOB, "*")])[0].metadata_list
    return sorted({m.path.rsplit("/", 1)[0] for m in found})


def partition_files(partition: str) -> tuple[list[str], dict[str, Marker]]:
    """(data file paths, markers by path) of one partition, as stored now."""
    patterns = [FileSystems.join(partition, f"*{s}") for s in INPUT_SUFFIXES]
    patterns.append(FileSystems.join(partition, f"{MARKER_PREFIX}*{MARKER_SUFFIX}"))
    results = FileSystems.match(patterns)
    names = sorted(m.path for r in results[:-1] for m in r.metadata_list)
    markers = {m.path: Marker.from_json(read_whole(m.path), m.path) for m in results[-1].metadata_list}
    return names, markers


def _put(path: str, data: bytes) -> None:
    """One file of a partition, whole or not at all: one object upload (GCS and S3 make an object visible only
    when its upload completes), or locally a temp file under ARCHIVE/.tmp (where the pipeline's own writes
    stage) renamed into place."""
    if "://" in path:
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            handle.write(data)
    else:
        archive = path.rsplit("/", 4)[0]  # ARCHIVE/tenant=T/date=D/hour=H/name
        write_atomically(path, FileSystems.join(archive, ".tmp"), [data], "uncompressed")


def _delete(partition: str, names: list[str], present: set[str]) -> None:
    gone = [FileSystems.join(partition, n) for n in names if n in present]
    if gone:
        FileSystems.delete(gone)


def compact_partition(partition: str, on_step: Callable[[str], None] = _step_done) -> PartitionResult:
    """Bring one partition to a compacted state: finish or undo what a crashed run left, then compact."""
    result = PartitionResult(partition)
    paths, markers = partition_files(partition)
    present = {basename(p) for p in paths}
    plan = plan_partition(paths, markers)
    for marker in plan.finish:  # its files all exist: steps 3 and 4 remain
        _delete(partition, list(marker.inputs), present)
        FileSystems.delete([FileSystems.join(partition, marker.name)])
        result.finished += 1
    for marker in plan.undo:  # its files never all appeared: readers ignore them; remove them, then the marker
        _delete(partition, list(marker.outputs), present)
        FileSystems.delete([FileSystems.join(partition, marker.name)])
        result.undone += 1
    if not plan.inputs:
        return result
    tables = []
    for path in plan.inputs:
        stored = read_whole(path)
        result.bytes_in += len(stored)
        tables.append(file_table(path, stored))
    files = compacted_files(compact_table(tables))
    marker = Marker.new(plan.inputs, len(files))
    _put(FileSystems.join(partition, marker.name), marker.to_json())
    on_step("marker")
    for name, data in zip(marker.outputs, files, strict=True):
        _put(FileSystems.join(partition, name), data)
        result.bytes_out += len(data)
    on_step("outputs")
    FileSystems.delete([FileSystems.join(partition, n) for n in marker.inputs])
    on_step("inputs")
    FileSystems.delete([FileSystems.join(partition, marker.name)])
    result.inputs, result.outputs, result.rows = len(marker.inputs), len(files), sum(len(t) for t in tables)
    return result
