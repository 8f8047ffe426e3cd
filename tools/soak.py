"""`make soak`: receiver -> Pub/Sub -> pipeline -> archive + a VictoriaMetrics sink, for 10 minutes at
half the measured peak.

1. Peak: PEAK_REQUESTS requests of 1000 samples sent as fast as 2 sender processes can; the peak is
   those samples over the time from the first request to the last one archived and delivered (the
   pipeline's own /metrics), i.e. what the whole path sustains, not just the receiver.
2. Soak: paced senders at half that rate for --minutes. Every sample is distinct (series x timestamp).
3. Drain, then count: every sample in the archive and in VictoriaMetrics (lost, duplicates), and each
   process's RSS at the start (after --warmup seconds of the soak, so the heaps have reached their
   working size) and at the end of the soak: the receiver's and the pipeline's flat within 10 %.

Exit code 1 when a sample is lost, a request was not answered 2xx or 503, or the RSS of a receiver or
pipeline process grew by more than 10 %.

    python -m tools.soak [--minutes 10] [--peak-requests 600] [--warmup 60]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import http.client
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.load import HEADERS, SERIES_PER_REQUEST, build_stream, run_load
from tools import services
from tools.run_local import scrape, total
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1

TOPIC, SUBSCRIPTION = "projects/soak/topics/soak", "projects/soak/subscriptions/soak"
GROUPS = 4  # series sets of 1000, cycled; request j carries group j % GROUPS at step j // GROUPS
STEP_MS = 100
# The verdict covers the project's own processes. The peers are printed too: VictoriaMetrics stays flat,
# the Pub/Sub emulator's JVM grows its heap under sustained load (see docs/operations.md, "Faults, measured").
OURS = ("receiver", "pipeline")


def soak_body(j: int, start_ms: int) -> bytes:
    group, step = j % GROUPS, j // GROUPS
    return codec.encode(build_v1([Series({"__name__": f"soak_metric_{i % 20}", "job": "soak", "group": str(group),
                                          "i": str(i)}, [(start_ms + step * STEP_MS, float(step))])
                                  for i in range(SERIES_PER_REQUEST)]))


class PacedSender(threading.Thread):
    """Sends requests j = offset, offset + every, ... at a fixed rate on one keep-alive connection."""

    def __init__(self, url: str, start_ms: int, offset: int, every: int, per_second: float, until: float) -> None:
        super().__init__(daemon=True)
        self.url, self.start_ms, self.offset, self.every = url, start_ms, offset, every
        self.interval, self.until = 1.0 / per_second, until
        self.sent: list[int] = []
        self.statuses: collections.Counter = collections.Counter()

    def run(self) -> None:
        host, port = self.url.split("://", 1)[1].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        j, next_at = self.offset, time.monotonic()
        while time.monotonic() < self.until:
            body = soak_body(j, self.start_ms)
            while True:  # a 503 is retried, as Prometheus would
                conn.request("POST", "/api/v1/write", body=body, headers=HEADERS)
                response = conn.getresponse()
                response.read()
                self.statuses[response.status] += 1
                if response.status != 503:
                    break
                time.sleep(1)
            if 200 <= response.status < 300:
                self.sent.append(j)
            j += self.every
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        conn.close()


def rss_of(named: dict[str, int]) -> dict[str, int]:
    """RSS per process: the receiver's master and each worker, the pipeline, the emulator, VictoriaMetrics."""
    out = {}
    for name, pid in named.items():
        tree = services.process_tree(pid)
        for n, p in enumerate(tree):
            label = name if len(tree) == 1 else (f"{name} master" if p == pid else f"{name} worker {n}")
            out[label] = services.rss_bytes(p)
    return out


def archive_counts(archive: Path) -> dict[tuple[str, str], collections.Counter]:
    """(group, i) -> Counter of timestamps, over every soak line in the archive."""
    from tools.archive import archive_files

    found: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    for path in archive_files(str(archive)):
        with gzip.open(path, "rt") as handle:
            for line in handle:
                record = json.loads(line)
                tags = record["tags"]
                if tags.get("job") == "soak":
                    found[(tags["group"], tags["i"])][record["timestamp"]] += 1
    return found


def vm_counts(vm_url: str) -> dict[tuple[str, str], collections.Counter]:
    found: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    status, body = services.http_get(f"{vm_url}/api/v1/export?match[]=%7Bjob%3D%22soak%22%7D", timeout=300)
    assert status == 200
    for line in body.decode().splitlines():
        row = json.loads(line)
        found[(row["metric"]["group"], row["metric"]["i"])].update(row["timestamps"])
    return found


def lost_and_duplicates(expected: int, counts: dict) -> tuple[int, int]:
    distinct = sum(len(c) for c in counts.values())
    return expected - distinct, sum(sum(c.values()) for c in counts.values()) - distinct


def delivered(pipeline_url: str) -> tuple[float, float]:
    found = scrape(pipeline_url)
    if isinstance(found, str):
        return 0.0, 0.0
    return total(found, "pipeline_archive_samples_total"), total(found, "pipeline_sink_samples_sent_total")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--peak-requests", type=int, default=600)
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds of soak before the first RSS reading")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    print(f"soak: logs and archive under {work}", flush=True)
    started: list[services.Service] = []
    try:
        emulator, host = services.start_pubsub_emulator(work)
        started.append(emulator)
        services.create_topic_and_subscription(host, TOPIC, SUBSCRIPTION)
        victoria, vm_url = services.start_victoria_metrics(work, name="vm-soak")
        started.append(victoria)
        receiver, url = services.start_receiver(work, host, TOPIC, name="receiver-soak")
        started.append(receiver)
        port = services.free_port()
        pipeline_url = f"http://{services.LOOPBACK}:{port}"
        pipeline = services.Service("pipeline-soak", [
            sys.executable, "-m", "pipeline", "--runner=DirectRunner", f"--input_subscription={SUBSCRIPTION}",
            f"--archive_path={work / 'archive'}", "--window_size=10", f"--metrics_port={port}",
            f"--remote_write_url={vm_url}/api/v1/write"], work, env={"PUBSUB_EMULATOR_HOST": host}, cwd=services.ROOT)
        started.append(pipeline)
        pipeline.wait_ready(lambda: services.http_get(f"{pipeline_url}/-/ready")[0] == 200, timeout=120)

        # 1. the peak of the whole path
        per_stream = args.peak_requests // 4
        streams = [[build_stream(s, per_stream, int(time.time() * 1000) - 3_600_000) for s in (p * 2, p * 2 + 1)]
                   for p in range(2)]
        begin = time.monotonic()
        load = run_load(f"{url}/api/v1/write", streams, duration=600)
        peak_samples = load["requests_ok"] * SERIES_PER_REQUEST
        if not peak_samples:
            raise services.ServiceError(f"the receiver accepted none of the peak load: {load['statuses']}")
        services.wait_until(lambda: min(delivered(pipeline_url)) >= peak_samples, 600, "the peak load delivered",
                            interval=0.2)
        peak = peak_samples / (time.monotonic() - begin)
        rate = peak / 2 / SERIES_PER_REQUEST  # requests per second
        print(f"peak: {peak_samples:,} samples archived and delivered at {peak:,.0f} samples/s "
              f"(receiver alone accepted {load['samples_per_second']:,.0f}/s); soaking at {rate * 1000:,.0f} "
              f"samples/s for {args.minutes:g} min", flush=True)

        # 2. the soak
        named = {"receiver": receiver.pid, "pipeline": pipeline.pid, "pubsub-emulator": emulator.pid,
                 "victoria-metrics": victoria.pid}
        start_ms = int(time.time() * 1000) - 3_600_000
        until = time.monotonic() + args.minutes * 60
        senders = [PacedSender(url, start_ms, k, 2, rate / 2, until) for k in range(2)]
        for sender in senders:
            sender.start()
        time.sleep(min(args.warmup, args.minutes * 60 / 2))
        rss_start = rss_of(named)
        while any(s.is_alive() for s in senders):
            time.sleep(min(30.0, max(0.5, until - time.monotonic())))
            archived, sent = delivered(pipeline_url)
            print(f"  {time.monotonic() - until + args.minutes * 60:5.0f} s: archived {archived:,.0f}, "
                  f"sink {sent:,.0f}", flush=True)
        rss_end = rss_of(named)
        accepted = sum(len(s.sent) for s in senders) * SERIES_PER_REQUEST
        statuses = sum((s.statuses for s in senders), collections.Counter())

        # 3. drain and count
        expected_total = peak_samples + accepted
        drain_from = time.monotonic()
        services.wait_until(lambda: min(delivered(pipeline_url)) >= expected_total, 900, "the soak load delivered",
                            interval=1.0)
        print(f"soak: {accepted:,} samples accepted ({dict(statuses)}); drained {time.monotonic() - drain_from:.0f} s "
              "after the senders stopped", flush=True)
        archive_lost, archive_dups = lost_and_duplicates(accepted, archive_counts(work / "archive"))
        vm_lost, vm_dups = lost_and_duplicates(accepted, vm_counts(vm_url))
        print(f"archive: lost {archive_lost}, duplicates {archive_dups}; VictoriaMetrics: lost {vm_lost}, "
              f"duplicates {vm_dups}")
        grew = []
        for name in rss_start:
            before, after = rss_start[name], rss_end.get(name, 0)
            change = (after - before) / before * 100 if before else 0.0
            ours = name.startswith(OURS)
            print(f"RSS {name:24s} {before / 2**20:8.1f} MiB -> {after / 2**20:8.1f} MiB ({change:+.1f} %)"
                  + ("" if ours else "  (peer, not judged)"))
            if change > 10 and ours:
                grew.append(name)
        failed = archive_lost or vm_lost or grew or set(statuses) - {204, 503}
        print("soak: " + ("FAILED" if failed else "passed") + (f" (RSS grew > 10 %: {grew})" if grew else ""))
        return 1 if failed else 0
    finally:
        for service in reversed(started):
            service.stop()


if __name__ == "__main__":
    sys.exit(main())
