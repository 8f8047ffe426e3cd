"""Pub/Sub down at launch: the pipeline says so in one line within seconds, naming the endpoint and what to
check (a closed loopback port stands for a stopped emulator)."""

from __future__ import annotations

import time

import pytest

from pipeline import launcher
from tools import services
from transforms.io import pubsub


def test_a_refusing_emulator_is_named_with_what_to_check(monkeypatch) -> None:
    port = services.free_port()  # nothing listens there
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}")
    assert pubsub.unreachable() == (f"cannot reach Pub/Sub at 127.0.0.1:{port} (Connection refused): is the emulator "
                                    "running there (make pubsub), and is PUBSUB_EMULATOR_HOST right?")
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "localhost-no-port")
    assert "(not host:port)" in (pubsub.unreachable() or "")


def test_the_pipeline_fails_fast_in_one_line(monkeypatch, tmp_path, capsys) -> None:
    port = services.free_port()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        launcher.main(["--runner=DirectRunner", "--input-subscription=projects/local-project/subscriptions/rw-in",
                       f"--archive_path={tmp_path}", "--metrics_port=0"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and elapsed < 5, elapsed
    assert err == [f"pipeline: cannot reach Pub/Sub at 127.0.0.1:{port} (Connection refused): is the emulator "
                   "running there (make pubsub), and is PUBSUB_EMULATOR_HOST right?"]
