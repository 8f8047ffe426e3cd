"""Helpers shared by the pipeline tests: the local loop on a thread, request builders, the archive read back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.local_loop import LocalLoop
from tools.archive import read_archive
from transforms.core.wire.builders import Series, build_v1

NOW_MS = int(time.time() * 1000)


def requests_for(count: int, per: int = 50, ts: int = NOW_MS, tag: str = "r") -> list:
    return [build_v1([Series({"__name__": "archive_test", "req": f"{tag}{r}", "i": str(i)}, [(ts, float(r * per + i))])
                      for i in range(per)]) for r in range(count)]


def all_lines(archive: Path) -> list[dict]:
    return [line for lines in read_archive(str(archive)).values() for line in lines]


class LoopThread:
    """LocalLoop in a background thread, recording every run's stats."""

    def __init__(self, subscription: str, archive: Path, window: int = 2, extra: tuple[str, ...] = ()) -> None:
        self.runs: list[dict] = []
        options = PipelineOptions(["--runner=DirectRunner", f"--input_subscription={subscription}",
                                   f"--archive_path={archive}", f"--window_size={window}", *extra])
        self.loop = LocalLoop(options, on_run=self.runs.append)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)

    def __enter__(self) -> LoopThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.stop()
        self.thread.join(120)
        assert not self.thread.is_alive()


