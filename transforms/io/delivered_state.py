"""A sink's delivered-timestamps log (transforms/core/sink/delivered.py) kept in files across restarts.

Per sink, under `<dead-letter path>/_sink_state/` by default: `<sink>.delivered`, the whole log, replaced
atomically once a minute (or when the journal passes 32 MB) and when the loop stops, and on local disk
`<sink>.journal`, to which every delivery is appended the moment the sink answers 2xx (fsynced before the
flush's messages are acked). A kill -9 therefore forgets nothing the sink accepted; only a machine crash
can lose the unsynced tail of the journal. `<sink>.sending` holds the current flush's requests as they
are sent: after a kill, those the sink refuses for their order are the ones it wrote without our seeing
the answer (already delivered), not losses. `<sink>.running` marks a loop that has not stopped cleanly.
On an object store (gs://, s3://) there is no append: the whole log is written every
`save_seconds` instead, and a kill forgets the deliveries since.
"""

from __future__ import annotations

import logging
import os
import time
from typing import BinaryIO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.core.sink.delivered import DEFAULT_MAX_SAMPLES, DEFAULT_MAX_SERIES, DeliveredLog
from transforms.io.files import read_whole, write_atomically

log = logging.getLogger(__name__)
SNAPSHOT_SECONDS = 60.0  # with a journal: how often the whole log is rewritten and the journal emptied
MAX_JOURNAL_BYTES = 32 << 20  # or sooner, when the journal grows past this (a high sample rate)
SAVE_SECONDS = 5.0  # without one (object stores): how often the whole log is rewritten
STATE_DIR = "_sink_state"


def state_path(dead_letter_path: str, sink: str) -> str:
    return FileSystems.join(dead_letter_path, STATE_DIR, f"{sink}.delivered")


class DeliveredState:
    """Loads and saves one sink's DeliveredLog at `path` (and its journal beside it, on local disk)."""

    def __init__(self, path: str, *, max_samples: int = DEFAULT_MAX_SAMPLES, max_series: int = DEFAULT_MAX_SERIES,
                 save_seconds: float | None = None) -> None:
        self.path = path
        self.local = "://" not in path
        self.journal_path = path.rsplit(".", 1)[0] + ".journal" if self.local else None
        self.marker_path = path.rsplit(".", 1)[0] + ".running" if self.local else None
        self.sending_path = path.rsplit(".", 1)[0] + ".sending" if self.local else None
        self._sending: BinaryIO | None = None
        self.max_samples = max_samples
        self.max_series = max_series
        self.save_seconds = save_seconds if save_seconds is not None else (
            SNAPSHOT_SECONDS if self.local else SAVE_SECONDS)
        self._saved_at = time.monotonic()
        self._handle: BinaryIO | None = None
        self._journal_bytes = 0

    def load(self) -> DeliveredLog:
        """The saved log, journaling from now on; empty if there is none or it is unreadable (said in the log)."""
        journal = b""
        if self.journal_path and os.path.exists(self.journal_path):
            with open(self.journal_path, "rb") as handle:
                journal = handle.read()
        try:
            snapshot = read_whole(self.path) if FileSystems.exists(self.path) else b""
            loaded, torn = DeliveredLog.from_bytes(snapshot, self.max_samples, self.max_series, journal)
        except (OSError, ValueError) as exc:
            log.error("delivered-timestamps state %s is unreadable (%s): starting empty; redelivered samples a "
                      "strict sink refuses will be dead-lettered until it fills again", self.path, exc)
            loaded, torn = DeliveredLog(self.max_samples, self.max_series), None
        if torn:
            log.warning("delivered-timestamps journal %s ends in a partial entry (%s): read up to it",
                        self.journal_path, torn)
        if snapshot or journal:
            log.info("delivered-timestamps state %s: %d series", self.path, len(loaded))
        if self.sending_path and os.path.exists(self.sending_path):
            with open(self.sending_path, "rb") as handle:
                sent, _ = DeliveredLog.from_bytes(b"", self.max_samples, self.max_series, handle.read())
            if len(sent):
                loaded.unconfirmed = sent
                log.info("delivered-timestamps state %s: %d series sent by the previous run", self.path, len(sent))
        if self.local:
            if torn or journal:
                self.save(loaded, resolved=False)  # a clean start: no partial entry left for appends to follow
            loaded.journal = self._append
            loaded.sending = self._append_sending
        return loaded

    def _append_sending(self, entries: bytes) -> None:
        """A request about to be sent (unbuffered, like the journal): after a kill, what may have been written."""
        if self._sending is None:
            assert self.sending_path is not None
            os.makedirs(os.path.dirname(self.sending_path) or ".", exist_ok=True)
            self._sending = open(self.sending_path, "ab", buffering=0)  # noqa: SIM115 (held open between appends)
        self._sending.write(entries)

    def _append(self, entries: bytes) -> None:
        """One delivery, written at once (unbuffered): the kernel keeps it even if the process is killed next."""
        if self._handle is None:
            assert self.journal_path is not None
            os.makedirs(os.path.dirname(self.journal_path) or ".", exist_ok=True)
            self._handle = open(self.journal_path, "ab", buffering=0)  # noqa: SIM115 (held open between appends)
        self._handle.write(entries)
        self._journal_bytes += len(entries)

    def save(self, delivered: DeliveredLog, resolved: bool = True) -> None:
        """The whole log, atomically; then the journal it includes is emptied, and with `resolved` (no request
        in flight: between flushes) the record of requests sent too."""
        directory = self.path.rsplit("/", 1)[0]
        write_atomically(self.path, FileSystems.join(directory, ".tmp"), [delivered.to_bytes()],
                         CompressionTypes.UNCOMPRESSED)
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self.journal_path and os.path.exists(self.journal_path):
            os.remove(self.journal_path)
        self._journal_bytes = 0
        if resolved:
            self.close()
            if self.sending_path and os.path.exists(self.sending_path):
                os.remove(self.sending_path)
        self._saved_at = time.monotonic()

    def after_flush(self, delivered: DeliveredLog) -> None:
        """Before a flush's messages are acked: the journal on disk, or the whole log when due."""
        if not delivered.changes:
            return
        if time.monotonic() - self._saved_at >= self.save_seconds or self._journal_bytes > MAX_JOURNAL_BYTES:
            self.save(delivered)
            return
        if self._handle is not None:
            os.fsync(self._handle.fileno())
        if self._sending is not None:  # the flush is over: each of its requests was answered 2xx or dead-lettered
            os.ftruncate(self._sending.fileno(), 0)

    def begin(self) -> bool:
        """Mark this sink's loop as running; True if the previous run never said it stopped (killed, crashed).

        Only on local disk (an object store path answers False): a marker file beside the record.
        """
        if self.marker_path is None:
            return False
        unclean = os.path.exists(self.marker_path)
        os.makedirs(os.path.dirname(self.marker_path) or ".", exist_ok=True)
        with open(self.marker_path, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        return unclean

    def end(self) -> None:
        """The loop stopped holding no message: the next run need not wait for leases to expire."""
        if self.marker_path and os.path.exists(self.marker_path):
            os.remove(self.marker_path)

    def close(self) -> None:
        for name in ("_handle", "_sending"):
            handle = getattr(self, name)
            if handle is not None:
                handle.close()
                setattr(self, name, None)
