"""The dead-letter store: files of dead-letter records (transforms.core.deadletter), on any Beam filesystem.

Layout under the dead-letter path: `date=YYYY-MM-DD/dead-LABEL.ndjson` for the archive, and
`sink=NAME/date=YYYY-MM-DD/dead-LABEL.ndjson` for each sink. Files appear whole (atomic writes).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.core.deadletter import DeadLetter
from transforms.io.files import write_atomically

SUFFIX = ".ndjson"


def _directory(dead_letter_path: str, sink: str | None, now: datetime) -> str:
    base = FileSystems.join(dead_letter_path, f"sink={sink}") if sink else dead_letter_path
    return FileSystems.join(base, f"date={now:%Y-%m-%d}")


def write_dead_letters(dead_letter_path: str, records: Iterable[str], *, sink: str | None = None,
                       label: str | None = None) -> str | None:
    """One file of dead-letter records (JSON lines); None when there are none.

    `label` names the file (the archive passes its window/pane label, so a retried bundle rewrites
    the same file); without one, the time and a random suffix make it unique.
    """
    lines = [(record + "\n").encode() for record in records]
    if not lines:
        return None
    now = datetime.now(UTC)
    label = label or f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:10]}"
    path = FileSystems.join(_directory(dead_letter_path, sink, now), f"dead-{label}{SUFFIX}")
    write_atomically(path, FileSystems.join(dead_letter_path, ".tmp"), lines, CompressionTypes.UNCOMPRESSED)
    return path


def dead_letter_files(dead_letter_path: str, sink: str | None = None) -> list[str]:
    """The archive's dead-letter files (or one sink's), sorted."""
    base = FileSystems.join(dead_letter_path, f"sink={sink}") if sink else dead_letter_path
    pattern = FileSystems.join(base, "date=*", f"*{SUFFIX}")
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def read_dead_letters(pattern: str) -> list[DeadLetter]:
    """Every record of every file matching a path or glob."""
    records = []
    for match in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(match.path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            records += [DeadLetter.from_json(line) for line in handle.read().decode().splitlines() if line.strip()]
    return records
