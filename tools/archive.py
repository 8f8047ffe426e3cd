"""Reading the archive back (tests, benches, status): every record of every finalised file.

The archive format (pipeline --archive_format) says which files are its own and how to read them.
"""

from __future__ import annotations

from typing import Any

from apache_beam.io.filesystems import FileSystems

from transforms.core.archive.format import DEFAULT_FORMAT, PARTITION_GLOB, archive_format
from transforms.io.deadletters import dead_letter_files
from transforms.io.files import read_whole

__all__ = ["archive_files", "dead_letter_files", "read_archive", "read_lines"]


def archive_files(archive_path: str, format_name: str = DEFAULT_FORMAT) -> list[str]:
    pattern = FileSystems.join(archive_path, *PARTITION_GLOB, archive_format(format_name).glob())
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def read_lines(path: str, format_name: str = DEFAULT_FORMAT) -> list[dict[str, Any]]:
    return archive_format(format_name).read(read_whole(path))


def read_archive(archive_path: str, format_name: str = DEFAULT_FORMAT) -> dict[str, list[dict[str, Any]]]:
    return {path: read_lines(path, format_name) for path in archive_files(archive_path, format_name)}
