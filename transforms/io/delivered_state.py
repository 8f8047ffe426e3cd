"""A sink's delivered-timestamps log (transforms/core/sink/delivered.py) kept in a file across restarts.

One file per sink, `<dead-letter path>/_sink_state/<sink>.delivered` by default, on any Beam filesystem,
replaced whole (atomic write). The forward loop saves it after a flush when `save_seconds` have passed
and when it stops. A delivery acknowledged by the sink but not yet saved when the process dies is not
remembered: if Pub/Sub redelivers it, the strict sink refuses it and it is dead-lettered (replaying it
is harmless), so the window for such a false dead letter is `save_seconds` wide.
"""

from __future__ import annotations

import logging
import time

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.core.sink.delivered import DEFAULT_MAX_SERIES, DEFAULT_PER_SERIES, DeliveredLog
from transforms.io.files import read_whole, write_atomically

log = logging.getLogger(__name__)
SAVE_SECONDS = 5.0
STATE_DIR = "_sink_state"


def state_path(dead_letter_path: str, sink: str) -> str:
    return FileSystems.join(dead_letter_path, STATE_DIR, f"{sink}.delivered")


class DeliveredState:
    """Loads and saves one sink's DeliveredLog at `path`."""

    def __init__(self, path: str, *, max_series: int = DEFAULT_MAX_SERIES, per_series: int = DEFAULT_PER_SERIES,
                 save_seconds: float = SAVE_SECONDS) -> None:
        self.path = path
        self.max_series = max_series
        self.per_series = per_series
        self.save_seconds = save_seconds
        self._saved_at = time.monotonic()

    def load(self) -> DeliveredLog:
        """The saved log; an empty one if there is none, or if the file is unreadable (said in the log)."""
        if not FileSystems.exists(self.path):
            return DeliveredLog(self.max_series, self.per_series)
        try:
            loaded = DeliveredLog.from_bytes(read_whole(self.path), self.max_series, self.per_series)
        except (OSError, ValueError) as exc:
            log.error("delivered-timestamps state %s is unreadable (%s): starting empty; redelivered samples a "
                      "strict sink refuses will be dead-lettered until it fills again", self.path, exc)
            return DeliveredLog(self.max_series, self.per_series)
        log.info("delivered-timestamps state %s: %d series", self.path, len(loaded))
        return loaded

    def save(self, delivered: DeliveredLog) -> None:
        directory = self.path.rsplit("/", 1)[0]
        write_atomically(self.path, FileSystems.join(directory, ".tmp"), [delivered.to_bytes()],
                         CompressionTypes.UNCOMPRESSED)
        self._saved_at = time.monotonic()

    def save_if_due(self, delivered: DeliveredLog) -> bool:
        """Save when something changed and save_seconds have passed since the last save."""
        if not delivered.changes or time.monotonic() - self._saved_at < self.save_seconds:
            return False
        self.save(delivered)
        return True
