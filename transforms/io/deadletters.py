"""The dead-letter store: files of dead-letter records, written atomically, on any Beam filesystem."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from apache_beam.io.filesystems import FileSystems

from transforms.io.files import write_atomically


def write_sink_dead_letters(dead_letter_path: str, sink_name: str, records: list[str]) -> str | None:
    """One file of dead-letter records under DEAD_LETTER_PATH/sink=NAME/date=YYYY-MM-DD/."""
    if not records:
        return None
    now = datetime.now(UTC)
    base = FileSystems.join(dead_letter_path, f"sink={sink_name}")
    path = FileSystems.join(base, f"date={now:%Y-%m-%d}", f"dead-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:10]}.ndjson")
    write_atomically(path, FileSystems.join(dead_letter_path, ".tmp"), (r + "\n" for r in records), compressed=False)
    return path
