"""An in-memory publisher for Flask test-client tests (pure logic; real Pub/Sub is in integration/)."""

from __future__ import annotations

import threading
from concurrent.futures import Future


class MemoryPublisher:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, dict[str, str]]] = []
        self.fail_with: Exception | None = None
        self.block: threading.Event | None = None
        self.entered = threading.Event()  # set once a publish has started (observable by tests)
        self.ready_error: Exception | None = None

    def publish(self, data: bytes, attributes: dict[str, str]) -> Future:
        future: Future = Future()
        self.entered.set()
        if self.block is not None:
            self.block.wait(10)
        if self.fail_with is not None:
            future.set_exception(self.fail_with)
        else:
            self.messages.append((data, dict(attributes)))
            future.set_result(str(len(self.messages)))
        return future

    def check_ready(self) -> None:
        if self.ready_error is not None:
            raise self.ready_error
