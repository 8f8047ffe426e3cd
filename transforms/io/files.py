"""Atomic file writes on any Beam filesystem (local disk, gs://, s3://): readers never see a partial file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


def read_whole(path: str) -> bytes:
    """A file's bytes as stored (no decompression: the format that wrote it reads it)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read()


def _mkdirs(path: str) -> None:
    """Local disk needs the directory; object stores (gs://, s3://) have none to make."""
    if "://" not in path and not FileSystems.exists(path):
        FileSystems.mkdirs(path)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(final_path: str, temp_dir: str, chunks: Iterable[bytes], compression: str) -> None:
    """Write to a temp file, then rename it into place: readers never see a partial file.

    `compression` is a Beam CompressionTypes value ("gzip", "uncompressed"), chosen by the format.

    Local disk renames; GCS and S3 copy then delete, and an object appears whole or not at all.
    """
    _mkdirs(temp_dir)
    temp_path = FileSystems.join(temp_dir, f"{uuid.uuid4().hex}.tmp")
    if not CompressionTypes.is_valid_compression_type(compression):
        raise ValueError(f"unknown compression {compression!r}")
    with FileSystems.create(temp_path, compression_type=compression) as handle:
        for chunk in chunks:
            handle.write(chunk)
    final_dir = final_path.rsplit("/", 1)[0]
    _mkdirs(final_dir)
    local = "://" not in final_path
    if local:  # the ack follows: the bytes must be on disk, not in the page cache
        _fsync(temp_path)
    FileSystems.rename([temp_path], [final_path])
    if local:
        _fsync(final_dir)
