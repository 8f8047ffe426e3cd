"""`make soak-streaming`: the streaming graph (`pipeline.graph.build_streaming`, the Dataflow path) on Beam's
local streaming runner, against the Pub/Sub emulator, archiving and forwarding to a VictoriaMetrics sink.

A paced publisher sends 1000-sample requests (each sample's value is its message's sequence number) for
--minutes; then small feeder messages keep the watermark moving (this runner moves it only while messages
arrive) until every sample is archived and delivered. Printed: the pipeline process's RSS and CPU over
time, publish -> archive-file latency (the file's mtime minus the publish time of each message), lost
and duplicate samples in the archive and in VictoriaMetrics.

Pass: RSS flat within 10 % (from --warmup seconds on to the end of the load), 0 lost, 0 duplicates in
the archive, publish -> file p99 <= window + 15 s. Exit code 1 otherwise.

    python -m tools.soak_streaming [--minutes 10] [--rate 50] [--window 60] [--no-sink]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tools import services

TOPIC, SUBSCRIPTION = "projects/soak-streaming/topics/soak", "projects/soak-streaming/subscriptions/soak"
SERIES = 1000  # samples per request, as Prometheus sends them
# Half the archive-only peak measured on this machine kind (docs/performance.md): the local streaming runner
# kept up with 100 requests of 1000 samples per second (60 s window) and fell behind at 200. With the sink
# branch delivering too, 50 keeps one core ~96 % busy: near that runner's peak, and still passing.
DEFAULT_RATE = 50.0


def run_graph(subscription: str, archive: str, window: int, sink_url: str | None, archives: bool = True,
              sinks_document: str | None = None, sink_log: bool = False) -> None:
    """The child process: build_streaming on the local streaming runner until SIGTERM. `bench.streaming_cost`
    runs this too (`--graph --subscription=...`); the sink reads `<subscription>-vm`. Without `archives`, only
    the sink branch: this runner runs every step on one executor thread (NUM_WORKERS = 1), and a read of an idle
    subscription holds that thread for its 30 s pull, so an archive branch with nothing to read would stall
    the sink's (Dataflow reads each source on its own). `sinks_document` (a sinks file's text) replaces the
    VictoriaMetrics sink; with `sink_log`, the sinks' INFO lines (already delivered, per request) go to stderr:
    this runner's Beam counters cannot be read while it runs."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.graph import build_sink_branches, build_streaming
    from pipeline.options import ArchiveOptions
    from transforms.core.sink import config

    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming",
                               f"--input_subscription={subscription}", f"--archive_path={archive}",
                               f"--window_size={window}"])
    sinks = []
    if sinks_document:
        sinks = config.from_document(sinks_document)
    elif sink_url:
        sinks = config.from_document(json.dumps({"remote_write": [{
            "url": sink_url, "name": "vm", "queue_config": {"batch_send_deadline": "1s"}}]}))
    pipeline = beam.Pipeline(options=options)
    if archives:
        build_streaming(pipeline, options.view_as(ArchiveOptions), sinks)
    else:
        build_sink_branches(pipeline, options.view_as(ArchiveOptions), sinks)
    if sink_log:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("transforms.core.sink").setLevel(logging.INFO)
    pipeline.run()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    os._exit(0)  # the runner's threads sit in a 30 s pull; the archive is what counts


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bodies:
    """Request n: SERIES series named soak_stream{i}, one sample each, value n, at time `ms`. Built from
    bytes: the series' labels are serialised once, and a request shares one Sample across its series, so a
    paced publisher is not held back by building 1000 protobuf objects per request (~45 ms in Python)."""

    def __init__(self) -> None:
        from transforms.core.protocol import Protocol
        from transforms.core.wire import codec
        from transforms.core.wire.builders import Series, build_v1
        from transforms.core.wire.proto import remote_v1_pb2

        template = build_v1([Series({"__name__": "soak_stream", "i": str(i)}, [(1, 0.0)]) for i in range(SERIES)])
        self.attributes = codec.message_attributes(Protocol.V1, "default", "2026-01-01T00:00:00.000Z",
                                                   codec.count(template))
        self.labels = [remote_v1_pb2.TimeSeries(labels=series.labels).SerializeToString()
                       for series in template.timeseries]

    def body(self, n: int, ms: int) -> bytes:
        import snappy
        from google.protobuf.internal.encoder import _VarintBytes

        inner = b"\x09" + struct.pack("<d", float(n)) + b"\x10" + _VarintBytes(ms)
        sample = b"\x12" + _VarintBytes(len(inner)) + inner
        raw = b"".join(b"\x0a" + _VarintBytes(len(labels) + len(sample)) + labels + sample for labels in self.labels)
        return snappy.compress(raw)


class Publisher(threading.Thread):
    """Publishes Bodies at `rate` requests per second until `until`, a few in flight at once."""

    def __init__(self, rate: float, until: float) -> None:
        super().__init__(daemon=True)
        self.rate, self.until = rate, until
        self.published: dict[int, float] = {}  # sequence -> wall-clock publish time

    def run(self) -> None:
        from google.cloud import pubsub_v1

        bodies = Bodies()
        client = pubsub_v1.PublisherClient()
        n, next_at, pending = 0, time.monotonic(), []
        while time.monotonic() < self.until:
            now = time.time()
            pending.append(client.publish(TOPIC, bodies.body(n, int(now * 1000)), **bodies.attributes))
            self.published[n] = now
            n += 1
            if len(pending) >= 50:
                for future in pending:
                    future.result(timeout=60)
                pending = []
            next_at += 1 / self.rate
            time.sleep(max(0.0, next_at - time.monotonic()))
        for future in pending:
            future.result(timeout=60)
        client.transport.close()


def feed(stop: threading.Event) -> None:
    """Tiny messages that move the runner's watermark (and its sink flush) once the load has stopped."""
    from tools.pubsub import publish_requests
    from transforms.core.wire.builders import Series, build_v1

    while not stop.wait(1.0):
        publish_requests(TOPIC, [(build_v1([Series({"__name__": "soak_feed"}, [(int(time.time() * 1000), 1.0)])]),
                                  "default")])


class SampleCounts:
    """How often each (request, series) sample was seen: one byte each (a 10-minute soak has 30 M samples,
    which a Counter of tuples would hold in several GB)."""

    def __init__(self, requests: int) -> None:
        self.counts = np.zeros((requests, SERIES), np.uint8)

    def add(self, request: int, series: int, times: int = 1) -> None:
        if 0 <= request < len(self.counts):
            self.counts[request, series] = min(255, int(self.counts[request, series]) + times)

    def add_values(self, series: int, requests: np.ndarray) -> None:
        known = requests[(requests >= 0) & (requests < len(self.counts))]
        np.add.at(self.counts[:, series], known, 1)

    @property
    def distinct(self) -> int:
        return int(np.count_nonzero(self.counts))

    @property
    def duplicates(self) -> int:
        return int(self.counts.sum(dtype=np.int64)) - self.distinct


def archived(archive: Path, seen: dict[str, float], first_file: dict[int, float], lines: SampleCounts) -> None:
    """Reads the archive files not read yet: sequence -> earliest file mtime, and (sequence, i) line counts.
    Lines go through the compiled line parser into columns (a 10-minute soak writes 30 M lines, which
    json.loads would take ~5 minutes to read)."""
    from isal import igzip

    from tools.archive import archive_files
    from transforms.core.archive.records import ndjson_columns

    for path in archive_files(str(archive)):
        if path in seen:
            continue
        seen[path] = mtime = os.path.getmtime(path)
        with open(path, "rb") as handle:
            columns = ndjson_columns(igzip.decompress(handle.read()))
        rows = np.flatnonzero(np.asarray([name == "soak_stream" for name in columns.names])[columns.row_run])
        if not len(rows):
            continue
        series_of_run = np.asarray([int(dict(labels)["i"]) if name == "soak_stream" else -1
                                    for name, labels in zip(columns.names, columns.labels, strict=True)])
        series = series_of_run[columns.row_run[rows]]
        requests = columns.values[rows].astype(np.int64)
        for n in np.unique(requests).tolist():
            first_file[n] = min(mtime, first_file.get(n, mtime))
        for i in np.unique(series).tolist():
            lines.add_values(i, requests[series == i])


def delivered(vm_url: str, requests: int) -> SampleCounts:
    status, body = services.http_get(f"{vm_url}/api/v1/export?match[]=soak_stream", timeout=300)
    found = SampleCounts(requests)
    if status == 200:
        for row in body.decode().splitlines():
            record = json.loads(row)
            found.add_values(int(record["metric"]["i"]), np.asarray(record["values"], np.float64).astype(np.int64))
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="requests of 1000 samples per second")
    parser.add_argument("--window", type=int, default=60, help="the graph's --window_size, seconds")
    parser.add_argument("--warmup", type=float, default=90.0, help="seconds of load before the first RSS reading")
    parser.add_argument("--no-sink", action="store_true", help="archive only, no VictoriaMetrics branch")
    parser.add_argument("--graph", action="store_true", help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--archive", help=argparse.SUPPRESS)
    parser.add_argument("--sink-url", help=argparse.SUPPRESS)
    parser.add_argument("--subscription", default=SUBSCRIPTION, help=argparse.SUPPRESS)
    parser.add_argument("--no-archive", action="store_true", help=argparse.SUPPRESS)  # the sink branch alone
    parser.add_argument("--sinks-json", help=argparse.SUPPRESS)  # a sinks document instead of --sink-url
    parser.add_argument("--sink-log", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.graph:
        run_graph(args.subscription, args.archive, args.window, args.sink_url, archives=not args.no_archive,
                  sinks_document=args.sinks_json, sink_log=args.sink_log)
        return 0
    if args.rate <= 0 or args.minutes <= 0 or args.window <= 0:
        parser.error("--rate, --minutes and --window must be positive")
    work = Path(tempfile.mkdtemp(prefix="soak-streaming-"))
    archive = work / "archive"
    print(f"soak-streaming: logs and archive under {work}", flush=True)
    started: list[services.Service] = []
    try:
        emulator, host = services.start_pubsub_emulator(work)
        started.append(emulator)
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        services.create_topic_and_subscription(host, TOPIC, SUBSCRIPTION)
        child = [sys.executable, "-m", "tools.soak_streaming", "--graph", f"--archive={archive}",
                 f"--window={args.window}"]
        vm_url = ""
        if not args.no_sink:
            victoria, vm_url = services.start_victoria_metrics(work, name="vm-soak-streaming")
            started.append(victoria)
            services.create_subscription(host, TOPIC, f"{SUBSCRIPTION}-vm")
            child.append(f"--sink-url={vm_url}/api/v1/write")
        pipeline = services.Service("pipeline-streaming", child, work, env={"PUBSUB_EMULATOR_HOST": host},
                                    cwd=services.ROOT)
        started.append(pipeline)
        begin = time.monotonic()
        until = begin + args.minutes * 60
        publisher = Publisher(args.rate, until)
        publisher.start()
        rss: list[tuple[float, int]] = []
        cpu_before, cpu_at = cpu_seconds(pipeline.pid), begin
        while publisher.is_alive():
            time.sleep(min(15.0, max(0.5, until - time.monotonic())))
            if not pipeline.alive():
                raise services.ServiceError(f"the pipeline exited:\n{pipeline.log_tail()}")
            now, cpu = time.monotonic(), cpu_seconds(pipeline.pid)
            rss.append((now - begin, services.rss_bytes(pipeline.pid)))
            print(f"  {now - begin:5.0f} s: published {len(publisher.published):6d}, pipeline RSS "
                  f"{rss[-1][1] / 2**20:7.1f} MiB, CPU {(cpu - cpu_before) / (now - cpu_at) * 100:5.1f} %", flush=True)
            cpu_before, cpu_at = cpu, now
        stop_feeding = threading.Event()
        feeder = threading.Thread(target=feed, args=(stop_feeding,), daemon=True)
        feeder.start()
        seen: dict[str, float] = {}
        first_file: dict[int, float] = {}
        expected = len(publisher.published)
        lines = SampleCounts(expected)
        sent = SampleCounts(expected)

        def complete() -> bool:
            nonlocal sent
            archived(archive, seen, first_file, lines)
            if len(first_file) < expected:
                return False
            sent = delivered(vm_url, expected) if vm_url else sent
            return not vm_url or sent.distinct >= expected * SERIES

        try:
            services.wait_until(complete, args.window + 180, "every sample archived and delivered", interval=2.0)
        except services.ServiceError as exc:
            print(f"soak-streaming: {exc}", flush=True)
        stop_feeding.set()
        if vm_url and not sent.distinct:  # timed out before the archive was complete: count the sink anyway
            sent = delivered(vm_url, expected)
        latencies = [first_file[n] - at for n, at in publisher.published.items() if n in first_file]
        lost = expected * SERIES - lines.distinct
        duplicates = lines.duplicates
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        print(f"published {expected} requests ({expected * SERIES:,} samples) at {args.rate:g}/s for "
              f"{args.minutes:g} min, window {args.window} s")
        print(f"archive: lost {lost}, duplicates {duplicates}; publish -> file p50 {p50:.1f} s, p99 {p99:.1f} s, "
              f"max {max(latencies, default=float('nan')):.1f} s")
        vm_lost = expected * SERIES - sent.distinct if vm_url else 0
        if vm_url:
            print(f"VictoriaMetrics: lost {vm_lost}, duplicates {sent.duplicates}")
        judged = [size for at, size in rss if at >= min(args.warmup, args.minutes * 30)]
        growth = (judged[-1] - judged[0]) / judged[0] * 100 if len(judged) > 1 else 0.0
        peak = max((size for _, size in rss), default=0)
        print(f"pipeline RSS from {judged[0] / 2**20 if judged else 0:.1f} MiB to "
              f"{judged[-1] / 2**20 if judged else 0:.1f} MiB ({growth:+.1f} %), peak {peak / 2**20:.1f} MiB")
        failed = lost or duplicates or vm_lost or growth > 10 or not p99 <= args.window + 15
        print("soak-streaming: " + ("FAILED" if failed else "passed"))
        return 1 if failed else 0
    finally:
        for service in reversed(started):
            service.stop()


if __name__ == "__main__":
    sys.exit(main())
