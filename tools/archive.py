"""Reading the archive back (tests, benches, status): every line of every finalised file."""

from __future__ import annotations

import gzip
import json
from typing import Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.io.deadletters import dead_letter_files  # noqa: F401 (the tools' and tests' one entry)


def archive_files(archive_path: str) -> list[str]:
    pattern = FileSystems.join(archive_path, "tenant=*", "date=*", "hour=*", "*.ndjson.gz")
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def read_lines(path: str) -> list[dict[str, Any]]:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        data = handle.read()
    # split on "\n" only: JSON strings may hold U+2028 etc., which str.splitlines() would cut at
    return [json.loads(line) for line in gzip.decompress(data).decode().split("\n") if line]


def read_archive(archive_path: str) -> dict[str, list[dict[str, Any]]]:
    return {path: read_lines(path) for path in archive_files(archive_path)}

