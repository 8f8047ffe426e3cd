"""The local runner's loop of bounded runs against the real Pub/Sub emulator, archiving to local disk.

Each of the local runner's traps (platform-facts.md) has a test here.
"""

from __future__ import annotations

import base64
import json
import signal
import sys
import time
from pathlib import Path

from pipeline.local_loop import LocalLoop
from tests.pipeline_helpers import NOW_MS, LoopThread, all_lines, requests_for
from tools import services
from tools.archive import dead_letter_files, read_archive
from tools.pubsub import Subscription, publish_raw, publish_requests
from transforms.core.protocol import STALE_NAN
from transforms.core.wire.builders import Series, build_v1


def wait_for_lines(archive: Path, expected: int, timeout: float = 90) -> list[dict]:
    services.wait_until(lambda: len(all_lines(archive)) >= expected, timeout, f"{expected} archived lines",
                        interval=0.5)
    return all_lines(archive)


def test_backlog_is_archived_in_full_with_big_pulls(topic_and_subscription, tmp_path):
    """Traps 1 and 6: a backlog published while the pipeline was down is archived whole, pulled in
    batches far above Beam's 10-message pull, and acked only after its files are final."""
    topic, subscription = topic_and_subscription
    publish_requests(topic, [(r, "default") for r in requests_for(600, per=10)])
    archive = tmp_path / "archive"
    with LoopThread(subscription.path, archive, window=3) as loop:
        lines = wait_for_lines(archive, 6000)
    assert len(lines) == 6000
    assert sorted(line["gauge"]["value"] for line in lines) == [float(v) for v in range(6000)]
    assert sum(run["messages"] for run in loop.runs) == 600
    assert max(run["max_pull"] for run in loop.runs) > 10
    assert not [p for p in archive.rglob("*.tmp") if p.is_file()], "no temp files left behind"
    assert subscription.drain(quiet=1.0) == [], "everything archived was acked"


def test_hours_old_samples_land_under_their_own_date_and_hour(topic_and_subscription, tmp_path):
    """Trap 2: samples sent after an outage keep their own time; nothing is dropped as late."""
    topic, subscription = topic_and_subscription
    old = NOW_MS - 5 * 3600 * 1000
    publish_requests(topic, [(r, "acme") for r in requests_for(3, ts=old, tag="old")]
                     + [(r, "acme") for r in requests_for(3, ts=NOW_MS, tag="new")])
    archive = tmp_path / "archive"
    with LoopThread(subscription.path, archive):
        wait_for_lines(archive, 300)
    files = read_archive(str(archive))
    hours = {Path(path).parent.name for path in files}
    old_hour = time.strftime("hour=%H", time.gmtime(old / 1000))
    new_hour = time.strftime("hour=%H", time.gmtime(NOW_MS / 1000))
    assert {old_hour, new_hour} <= hours
    for path, lines in files.items():
        assert "/tenant=acme/" in path
        for line in lines:
            assert line["timestamp"][11:13] == Path(path).parent.name[5:7]  # partition = the sample's own hour


def test_undecodable_messages_go_whole_to_dead_letters_and_the_rest_is_archived(topic_and_subscription, tmp_path):
    topic, subscription = topic_and_subscription
    publish_raw(topic, b"\xff\xffnot snappy", {"protocol": "1.0", "tenant": "default", "samples": "1"})
    publish_raw(topic, b"whatever", {"tenant": "default"})  # no protocol attribute
    publish_requests(topic, [(build_v1([Series({"__name__": "ok"}, [(NOW_MS, STALE_NAN)])]), "default")])
    archive = tmp_path / "archive"
    with LoopThread(subscription.path, archive) as loop:
        [line] = wait_for_lines(archive, 1)
        services.wait_until(lambda: sum(r["dead_letters"] for r in loop.runs) >= 2, 60, "dead letters")
    assert line["gauge"] == {"value": "StaleNaN"}
    records = [json.loads(r) for f in dead_letter_files(str(archive / "_dead_letters"))
               for r in Path(f).read_text().splitlines()]
    assert sorted(base64.b64decode(r["data_base64"]) for r in records) == [b"whatever", b"\xff\xffnot snappy"]
    errors = " ".join(r["error"] for r in records)
    assert "snappy" in errors and "protocol" in errors
    assert all(r["attributes"]["tenant"] == "default" and r["message_id"] for r in records)


def test_last_window_is_flushed_soon_after_traffic_stops(topic_and_subscription, tmp_path):
    """Trap 4: with no further traffic, the open window is written within window_size + 10 s."""
    topic, subscription = topic_and_subscription
    archive = tmp_path / "archive"
    window = 5
    with LoopThread(subscription.path, archive, window=window):
        time.sleep(1)
        publish_requests(topic, [(r, "default") for r in requests_for(2)])
        published = time.monotonic()
        wait_for_lines(archive, 100, timeout=window + 10)
        assert time.monotonic() - published <= window + 10


def _start_pipeline(subscription: str, archive: Path, window: int, log_dir: Path, name: str) -> services.Service:
    return services.Service(name, [sys.executable, "-m", "pipeline", "--runner=DirectRunner",
                                   f"--input_subscription={subscription}", f"--archive_path={archive}",
                                   f"--window_size={window}", "--metrics_port=0"], log_dir, cwd=services.ROOT)


def wait_until_held(subscription: Subscription, timeout: float = 60) -> None:
    """Proof that a running pipeline pulled every published message and holds it (unacked): nothing
    is left to pull, twice in a row."""
    services.wait_until(lambda: subscription.all_held_elsewhere() and subscription.all_held_elsewhere(),
                        timeout, "the pipeline to pull and hold every message", interval=0.5)


def test_sigterm_and_sigint_stop_cleanly_after_flushing(topic_and_subscription, tmp_path):
    """Trap 5: a signal stops reading, flushes the open window, finalises files, leaves no temp files."""
    topic, subscription = topic_and_subscription
    archive = tmp_path / "archive"
    for sig, tag in ((signal.SIGTERM, "a"), (signal.SIGINT, "b")):
        pipeline = _start_pipeline(subscription.path, archive, 60, tmp_path, f"pipeline-{tag}")
        try:
            before = len(all_lines(archive))
            publish_requests(topic, [(r, "default") for r in requests_for(5, tag=tag)])
            wait_until_held(subscription)
            assert len(all_lines(archive)) == before, "held in the open 60 s window, not yet written"
            pipeline.signal(sig)
            assert pipeline.process.wait(60) == 0, pipeline.log_tail()
        finally:
            pipeline.stop()
    lines = all_lines(archive)
    assert len(lines) == 500
    assert not [p for p in archive.rglob("*.tmp") if p.is_file()]
    assert subscription.drain(quiet=1.0) == []


def test_a_crash_before_the_write_loses_nothing(pubsub_emulator, tmp_path):
    """Trap 6: nothing is acked before it is durably written. SIGKILL mid-window, restart: all there."""
    topic = "projects/test-project/topics/crash"
    subscription = "projects/test-project/subscriptions/crash-sub"
    services.create_topic_and_subscription(pubsub_emulator, topic, subscription, ack_deadline=10)
    archive = tmp_path / "archive"
    publish_requests(topic, [(r, "default") for r in requests_for(20)])
    first = _start_pipeline(subscription, archive, 60, tmp_path, "pipeline-crash")
    with Subscription(subscription) as probe:
        wait_until_held(probe)  # pulled and held in a 60 s window, not yet written
    first.signal(signal.SIGKILL)
    first.stop()
    assert all_lines(archive) == []
    second = _start_pipeline(subscription, archive, 2, tmp_path, "pipeline-restart")
    try:
        lines = wait_for_lines(archive, 1000, timeout=90)
    finally:
        second.stop()
    assert sorted(line["gauge"]["value"] for line in lines) == [float(v) for v in range(1000)]


def test_dead_letters_replay_byte_for_byte(topic_and_subscription, tmp_path):
    from pipeline.replay import main as replay

    topic, subscription = topic_and_subscription
    attributes = {"protocol": "1.0", "tenant": "default", "samples": "3"}
    publish_raw(topic, b"\x00\x01broken", attributes)
    archive = tmp_path / "archive"
    with LoopThread(subscription.path, archive) as loop:
        services.wait_until(lambda: sum(r["dead_letters"] for r in loop.runs) >= 1, 60, "a dead letter")
    pattern = str(archive / "_dead_letters" / "date=*" / "*.ndjson")
    assert replay(["--dead_letters", pattern, "--topic", topic]) == 0
    [message] = subscription.drain(expect=1)
    assert message.data == b"\x00\x01broken"
    assert {k: message.attributes[k] for k in attributes} == attributes


def test_short_ack_deadline_causes_no_duplicates(pubsub_emulator, tmp_path):
    """Pub/Sub's default 10 s ack deadline, a 20 s window: held messages must not be redelivered."""
    topic = "projects/test-project/topics/short-deadline"
    subscription = "projects/test-project/subscriptions/short-deadline-sub"
    services.create_topic_and_subscription(pubsub_emulator, topic, subscription, ack_deadline=10)
    archive = tmp_path / "archive"
    with LoopThread(subscription, archive, window=20) as loop:
        publish_requests(topic, [(r, "default") for r in requests_for(20, per=5)])
        lines = wait_for_lines(archive, 100, timeout=60)
        time.sleep(2)
    assert len(all_lines(archive)) == 100 == len(lines)
    assert sum(run["messages"] for run in loop.runs) == 20


def test_a_failed_run_acks_nothing_and_is_retried(topic_and_subscription, tmp_path, monkeypatch):
    """An object store that fails a run: nothing acked, the batch comes back and is archived."""
    topic, subscription = topic_and_subscription
    archive = tmp_path / "archive"
    publish_requests(topic, [(r, "default") for r in requests_for(4, per=5)])
    real = LocalLoop.run_bounded
    calls = []

    def flaky(self, window_start, messages):
        calls.append(len(messages))
        if len(calls) == 1:
            raise OSError("simulated object-store outage")
        return real(self, window_start, messages)

    monkeypatch.setattr(LocalLoop, "run_bounded", flaky)
    with LoopThread(subscription.path, archive) as loop:
        lines = wait_for_lines(archive, 20, timeout=60)
    assert len(lines) == 20 and len(calls) >= 2
    assert sum(run["messages"] for run in loop.runs) == 4


def test_poison_attributes_are_dead_lettered_not_fatal(topic_and_subscription, tmp_path):
    topic, subscription = topic_and_subscription
    good = build_v1([Series({"__name__": "ok"}, [(NOW_MS, 1.0)])])
    publish_requests(topic, [(good, "default")])
    publish_raw(topic, b"x", {"protocol": "1.0", "tenant": "x/../../escaped", "samples": "1.5"})
    archive = tmp_path / "archive"
    with LoopThread(subscription.path, archive) as loop:
        wait_for_lines(archive, 1)
        services.wait_until(lambda: sum(r["dead_letters"] for r in loop.runs) >= 1, 60, "dead letter")
    assert not (tmp_path / "escaped").exists()
    [record] = [json.loads(r) for f in dead_letter_files(str(archive / "_dead_letters"))
                for r in Path(f).read_text().splitlines()]
    assert "invalid tenant" in record["error"]
