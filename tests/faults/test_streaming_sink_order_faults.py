"""Issue 20's order faults on the streaming graph (the Dataflow path) on Beam's local streaming runner: its sink
branch (`pipeline.graph.build_sink_branches`, run by `tools.soak_streaming --graph`) forwarding into a strict
Prometheus 2.42 (no out-of-order window; the sink at `order: strict`) under steady load, killed with SIGKILL
mid-stream and restarted, the sink frozen (SIGSTOP) for a while, and killed again as the backlog flows. Then
messages are published again after newer ones, as Pub/Sub redelivers (this runner's read acks at pull and never
redelivers): requests the killed runs delivered, and requests the last run delivered.

Counted and printed: samples published, held by Prometheus, dead-lettered (by reason), counted as already
delivered (the runs' log lines: this runner's Beam counters cannot be read while it runs), and real losses:
published, never in Prometheus and not dead-lettered. Asserted: no copy of what the last run delivered is a
dead letter (its record is in keyed state), and the only losses are messages of the killed runs' time (this
runner's read acked them at pull). ~2 minutes: `make chaos` only (tests/run_suite.sh leaves it out)."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

from tests.fault_helpers import SteadyPublisher, expected_samples, fault_requests, kill9, outage_seconds
from tests.integration.test_sinks_real_stores import prometheus_raw
from tests.sink_helpers import BASE_MS
from tools import services
from tools.pubsub import publish_requests
from transforms.core.protocol import Protocol
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1

REQUESTS, SERIES, PER_SECOND = 240, 100, 6.0  # 24,000 samples over 40 s
SINK = "prom"
EARLY, LATE = (0, 30), (REQUESTS - 30, REQUESTS)  # requests published again at the end, as Pub/Sub redelivers
QUIET_SECONDS = 20  # nothing more delivered for this long (feeder messages keep this runner's flushes firing)


ALREADY = re.compile(rf"sink {SINK}: (\d+) (?:of \d+ samples already delivered|samples sent by a previous run)")


class Runs:
    """The streaming graph's runs, one process each, logging the sink's INFO lines (this runner's Beam counters
    cannot be read while it runs)."""

    def __init__(self, log_dir: Path, work: Path, subscription: str, sinks_document: str) -> None:
        self.log_dir, self.work, self.subscription, self.sinks_document = log_dir, work, subscription, sinks_document
        self.runs: list[services.Service] = []

    def start(self) -> services.Service:
        run = services.Service(f"streaming-order-{os.getpid()}-{len(self.runs) + 1}", [
            sys.executable, "-m", "tools.soak_streaming", "--graph", "--no-archive", "--sink-log",
            f"--archive={self.work / 'archive'}", f"--subscription={self.subscription}",
            f"--sinks-json={self.sinks_document}"],
            self.log_dir, env={"PUBSUB_EMULATOR_HOST": os.environ["PUBSUB_EMULATOR_HOST"]}, cwd=services.ROOT)
        self.runs.append(run)
        return run

    def already_delivered(self) -> int:
        return sum(int(n) for run in self.runs for n in ALREADY.findall(run.log_path.read_text(errors="replace")))


def feed(topic: str, stop: threading.Event) -> None:
    """A tiny message a second: this runner fires a batch's processing-time flush only when input arrives."""
    while not stop.wait(1.0):
        publish_requests(topic, [(build_v1([Series({"__name__": "order_feed"}, [(int(time.time() * 1000), 1.0)])]),
                                  "default")])


def dead_samples_by_reason(dead_letter_dir: Path) -> dict[str, set]:
    found: dict[str, set] = {"never delivered": set(), "maybe already delivered": set(), "other": set()}
    for path in dead_letter_dir.rglob("*.ndjson"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            kind = next((k for k in found if k in record["error"]), "other")
            body = codec.decode(base64.b64decode(record["data_base64"]), Protocol.V1, 1 << 24).message
            for s in body.timeseries:
                key = tuple(sorted((lab.name, lab.value) for lab in s.labels))
                found[kind] |= {(key, x.timestamp, x.value) for x in s.samples}
    return found


def test_streaming_graph_into_a_strict_prometheus_under_kills_and_a_frozen_sink(
        log_dir, pubsub_emulator, topic_and_subscription, tmp_path):
    topic, subscription = topic_and_subscription
    services.create_subscription(pubsub_emulator, topic, f"{subscription.path}-{SINK}")
    prometheus, prom_url = services.start_prometheus(log_dir, "global: {}\n", receiver=True,
                                                     name="prom-streaming-order")
    document = json.dumps({"remote_write": [{"url": f"{prom_url}/api/v1/write", "name": SINK, "order": "strict",
                                             "queue_config": {"batch_send_deadline": "1s"}}]})
    runs = Runs(log_dir, tmp_path, subscription.path, document)
    publisher = SteadyPublisher(topic, fault_requests("order", REQUESTS, SERIES, BASE_MS), PER_SECOND)
    stopped_for = outage_seconds("CHAOS_SINK_FROZEN", 20)
    stop_feeding = threading.Event()
    feeder = threading.Thread(target=feed, args=(topic, stop_feeding), daemon=True)
    pipeline = runs.start()
    first_kill_at = 0

    def held_count() -> int:
        return sum(len(samples) for samples in prometheus_raw(prom_url, "order_metric").values())

    last = {"seen": -1, "at": time.monotonic()}

    def quiet() -> bool:
        seen = held_count() + len(list((tmp_path / "archive").rglob("*.ndjson")))
        if seen != last["seen"]:
            last.update(seen=seen, at=time.monotonic())
        return time.monotonic() - last["at"] > QUIET_SECONDS

    try:
        publisher.start()
        feeder.start()
        services.wait_until(lambda: held_count() >= 2000, 120, "the sink to be receiving", interval=0.5)
        first_kill_at = held_count()
        kill9(pipeline)  # first kill: between or during sends
        before = held_count()
        pipeline = runs.start()
        services.wait_until(lambda: held_count() > before, 120, "the restarted run to deliver", interval=0.5)
        before = held_count()
        os.kill(prometheus.pid, signal.SIGSTOP)  # the sink freezes
        try:
            time.sleep(stopped_for)  # a deliberate outage: what is being measured is the time it lasts
        finally:
            os.kill(prometheus.pid, signal.SIGCONT)
        # second kill: while the backlog is being delivered
        services.wait_until(lambda: held_count() > before, 120, "the backlog to start flowing", interval=0.05)
        kill9(pipeline)
        pipeline = runs.start()
        publisher.finish(240)
        # Pub/Sub redelivering what was delivered already (a worker that died before its commit, an ack deadline
        # that expired in a stall: Dataflow's case; this runner acks at pull and never sees it): requests the
        # killed runs delivered, and requests this last run delivered, again after newer ones.
        services.wait_until(quiet, 300, "the backlog to be delivered", interval=1.0)
        bodies = fault_requests("order", REQUESTS, SERIES, BASE_MS)
        again = SteadyPublisher(topic, bodies[slice(*EARLY)] + bodies[slice(*LATE)], PER_SECOND * 2)
        again.start()
        again.finish(120)
        last.update(at=time.monotonic())  # quiet from now on, not from before the redeliveries
        services.wait_until(quiet, 300, "deliveries to be over", interval=1.0)
        got = prometheus_raw(prom_url, "order_metric")
    finally:
        stop_feeding.set()
        publisher.halt.set()
        pipeline.stop()
        prometheus.stop()
    expected = expected_samples("order", REQUESTS, SERIES, BASE_MS)
    wanted = {(key, t, v) for key, samples in expected.items() for t, v in samples}
    held = {(key, t, v) for key, samples in got.items() for t, v in samples}
    dead = dead_samples_by_reason(tmp_path / "archive" / "_dead_letters")
    redelivered = (EARLY[1] - EARLY[0] + LATE[1] - LATE[0]) * SERIES
    every_dead = {sample for found in dead.values() for sample in found if sample[0] in expected}
    late = {(k, t, v) for k, t, v in every_dead if t >= BASE_MS + LATE[0] * 1000}
    lost = wanted - held - every_dead
    lost_requests = sorted({(t - BASE_MS) // 1000 for _, t, _ in lost})
    whole = [r for r in lost_requests if sum(1 for _, t, _ in lost if t == BASE_MS + r * 1000) == SERIES]
    already = runs.already_delivered()
    print(f"\nstreaming graph, local streaming runner: {len(wanted)} samples published; killed after "
          f"{first_kill_at} held, sink frozen {stopped_for:.0f} s, killed again as the backlog flowed, then "
          f"{redelivered} samples redelivered. "
          f"Prometheus holds {len(held & wanted)}; dead letters: "
          + ", ".join(f"{kind} {len(found & every_dead)} ({len(found & held)} held)" for kind, found in dead.items())
          + f" (of them {len(late)} copies of requests the last run delivered, {len(late & held)} held); "
          f"already delivered {already}; real losses {len(lost)} (in {len(lost_requests)} requests, "
          f"{len(whole)} of them whole: {whole[:20]})")
    assert held <= wanted  # nothing invented, and Prometheus holds each sample once
    # What the last run delivered is in its keyed state: its redelivered copies are already delivered.
    assert not late & held, "redelivered samples Prometheus holds were dead-lettered"
    # This runner's Pub/Sub read acks at pull (docs/sinks.md): a kill loses what it had pulled and not yet sent,
    # whole messages of the killed runs' time; nothing else may be missing.
    assert all(r < LATE[0] for r in lost_requests), lost_requests
