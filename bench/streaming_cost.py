"""`make bench-streaming-cost`: CPU per sample of the streaming graph (the Dataflow path) on Beam's local streaming
runner, beside the local loop's on the same messages, and the per-element overhead of each.

For each pipeline variant (archive only, forward only to a VictoriaMetrics, both), two processes read their own
subscriptions of one topic at once: the streaming graph (`pipeline.graph.build_streaming` on
`--runner=BundleBasedDirectRunner --streaming`, run by `tools.soak_streaming --graph`) and the local loop
(`python -m pipeline --runner=DirectRunner`). A paced publisher in this process sends the bench-cpu shapes
(1000 series x 10 node_exporter-like labels at 60 messages/s; Prometheus' 2000 samples per send at 30/s) as the
receiver would publish them: each request one message, its body as received. Each process's CPU is utime +
stime of its tree (/proc), from the start of the load to the moment its samples are all in finalised archive
files (lines counted in the files) and/or in its VictoriaMetrics (vm_rows_inserted_total).

Forward only, the streaming graph is its sink branch alone (`pipeline.graph.build_sink_branches`): this
runner's single executor thread would sit in the idle archive read's 30 s pulls. The local loop runs its archive
loop on an idle subscription, as in bench-cpu; its idle CPU is printed per variant.

After the load, a metadata-only message a second keeps the streaming runner's watermark and its sink flush
moving (it moves them only while messages arrive; Dataflow does not need this). These messages count as
elements; they add no samples and no VictoriaMetrics rows.

The core's CPU on the same messages (`bench.core_cost`: decode + lines, or decode + sink request bodies) is
measured in this process before each load, warm (state kept, as a DoFn instance on Dataflow) and cold (state
rebuilt every 10 messages, as this runner's per-bundle DoFn setup does); the per-element overhead is (process
CPU - core CPU) / messages, beyond the warm core and beyond the cold one.
py-spy profiles both processes over each load (`bench.profile_groups`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import core_cost
from bench.cpu import REQUEST_SHAPES, VARIANTS, Spy, print_profile, slug, wait_for
from bench.forward import rows_inserted
from bench.load import build_stream
from bench.proc_cpu import snapshot, tree_cpu_seconds
from tools import services
from transforms.core.archive.format import archive_format, partition_parts
from transforms.core.archive.lines import hour_partition
from transforms.core.protocol import DEFAULT_TENANT, Protocol
from transforms.core.wire import codec
from transforms.core.wire.proto import remote_v1_pb2
from transforms.core.wire.validation import Counts

PROJECT = "projects/bench-streaming-cost"
TOPIC, IDLE_TOPIC = f"{PROJECT}/topics/live", f"{PROJECT}/topics/idle"
RUNNERS = ("streaming", "local")
STREAMS = 2  # interleaved series sets, as bench-cpu's two senders
HOUR_MS = 3_600_000
# The local streaming runner's Pub/Sub read pulls at most 10 messages at a time (transform_evaluator's
# _PubSubReadEvaluator, max_messages=10), one bundle per pull, and re-creates every DoFn per bundle.
RUNNER_BUNDLE = 10


def load_messages(shape: str, requests: int, hour: int) -> list[core_cost.Message]:
    """The shape's requests, as the receiver publishes them; every sample in `hour` (hours since the epoch)."""
    series = REQUEST_SHAPES[shape]
    per_stream = max(1, requests // STREAMS)
    streams = [build_stream(s, per_stream, hour * HOUR_MS, shape="node", series=series) for s in range(STREAMS)]
    attributes = codec.message_attributes(Protocol.V1, DEFAULT_TENANT, "2026-01-01T00:00:00.000Z",
                                          Counts(series=series, samples=series))
    return [(stream[i], attributes) for i in range(per_stream) for stream in streams]


def feeder_message() -> core_cost.Message:
    """A metadata-only 1.0 request (Prometheus sends these every minute): moves watermarks, adds no sample."""
    request = remote_v1_pb2.WriteRequest(metadata=[remote_v1_pb2.MetricMetadata(
        type=remote_v1_pb2.MetricMetadata.COUNTER, metric_family_name="bench_feed_total", help="feeds watermarks")])
    return codec.encode(request), codec.message_attributes(Protocol.V1, DEFAULT_TENANT, "2026-01-01T00:00:00.000Z",
                                                           Counts(metadata=1))


def publish_paced(messages: list[core_cost.Message], rate: float) -> float:
    """Publish at `rate` messages/s (each confirmed before the end); returns the seconds it took."""
    from google.cloud import pubsub_v1

    client = pubsub_v1.PublisherClient()
    started = time.monotonic()
    futures = []
    for i, (data, attributes) in enumerate(messages):
        time.sleep(max(0.0, started + i / rate - time.monotonic()))
        futures.append(client.publish(TOPIC, data, **attributes))
    for future in futures:
        future.result(timeout=120)
    took = time.monotonic() - started
    client.transport.close()
    return took


class Feeder(threading.Thread):
    """One feeder message a second until stopped; remembers when each was published."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="feeder")
        self.stopping = threading.Event()
        self.times: list[float] = []

    def run(self) -> None:
        from google.cloud import pubsub_v1

        client = pubsub_v1.PublisherClient()
        data, attributes = feeder_message()
        while not self.stopping.is_set():
            client.publish(TOPIC, data, **attributes).result(timeout=60)
            self.times.append(time.monotonic())
            self.stopping.wait(1.0)
        client.transport.close()

    def published_by(self, moment: float) -> int:
        return sum(1 for t in self.times if t <= moment)

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


def count_lines(directory: Path, suffix: str, seen: dict[Path, int]) -> int:
    """Lines in the finalised NDJSON files of one partition (each file read once: they are renamed into place
    whole and never change)."""
    from isal import igzip

    if directory.is_dir():
        for path in directory.glob(f"*{suffix}"):
            if path not in seen:
                seen[path] = igzip.decompress(path.read_bytes()).count(b"\n")
    return sum(seen.values())


@dataclass
class Process:
    runner: str  # streaming or local
    variant: str
    service: services.Service
    archive: Path
    vm_url: str | None
    subscriptions: list[str]
    metrics_port: int | None = None  # the local loop's /metrics and /-/ready
    lines_seen: dict[Path, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.runner} {self.variant}"

    def done(self, hour: int, samples: int, rows_before: int) -> bool:
        archives, forwards = VARIANTS[self.variant]
        if archives:
            directory = self.archive.joinpath(*partition_parts(hour_partition(DEFAULT_TENANT, hour)))
            if count_lines(directory, archive_format("ndjson").suffix, self.lines_seen) < samples:
                return False
        return not forwards or rows_inserted(self.vm_url) - rows_before >= samples


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="bench-streaming-cost-"))
        self.started: list[services.Service] = []
        self.results: list[dict] = []
        self.next_hour = int(time.time() * 1000) // HOUR_MS - 2  # each load its own hour, counting back

    def hour(self) -> int:
        self.next_hour -= 1
        return self.next_hour

    def start(self, service_and_url: tuple[services.Service, str]) -> str:
        self.started.append(service_and_url[0])
        return service_and_url[1]

    def start_emulator(self) -> None:
        emulator, self.host = services.start_pubsub_emulator(self.work)
        self.started.append(emulator)
        os.environ["PUBSUB_EMULATOR_HOST"] = self.host  # this process publishes
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()
        for topic in (TOPIC, IDLE_TOPIC):
            publisher.create_topic(request={"name": topic})
        publisher.transport.close()

    def subscribe(self, topic: str, subscription: str, owned: list[str]) -> None:
        services.create_subscription(self.host, topic, subscription)
        owned.append(subscription)

    def unsubscribe(self, subscriptions: list[str]) -> None:
        """A stopped variant's subscriptions would keep every later message in the emulator's memory."""
        from transforms.io.pubsub import subscriber_client

        with subscriber_client() as subscriber:
            for subscription in subscriptions:
                subscriber.delete_subscription(request={"subscription": subscription})

    def start_processes(self, variant: str) -> list[Process]:
        """Both runners of one variant, each on subscriptions of its own. Forward only: the local loop's archive
        loop, which always runs, reads a topic nobody publishes to (as in bench-cpu); the streaming graph runs its
        sink branch alone (`tools.soak_streaming.run_graph` says why)."""
        from transforms.core.sink.config import from_flags

        archives, forwards = VARIANTS[variant]
        processes = []
        for runner in RUNNERS:
            sub, owned = f"{PROJECT}/subscriptions/{runner}-{slug(variant)}", []
            self.subscribe(TOPIC if archives else IDLE_TOPIC, sub, owned)
            port = None
            archive = self.work / f"archive-{runner}-{slug(variant)}"
            vm_url = None
            if forwards:
                vm_url = self.start(services.start_victoria_metrics(self.work, name=f"vm-{runner}-{slug(variant)}"))
            if runner == "streaming":
                argv = [sys.executable, "-m", "tools.soak_streaming", "--graph", f"--subscription={sub}",
                        f"--archive={archive}", f"--window={self.args.window_size}",
                        *([] if archives else ["--no-archive"])]
                if vm_url:
                    self.subscribe(TOPIC, f"{sub}-vm", owned)
                    argv.append(f"--sink-url={vm_url}/api/v1/write")
            else:
                port = services.free_port()
                argv = [sys.executable, "-m", "pipeline", "--runner=DirectRunner", f"--input_subscription={sub}",
                        f"--archive_path={archive}", f"--window_size={self.args.window_size}", f"--metrics_port={port}"]
                if vm_url:
                    self.subscribe(TOPIC, from_flags([f"{vm_url}/api/v1/write"])[0].subscription_for(sub), owned)
                    argv.append(f"--remote_write_url={vm_url}/api/v1/write")
            service = services.Service(f"pipeline-{runner}-{slug(variant)}", argv, self.work,
                                       env={"PUBSUB_EMULATOR_HOST": self.host}, cwd=services.ROOT)
            self.started.append(service)
            processes.append(Process(runner, variant, service, archive, vm_url, owned, port))
        return processes

    def drain(self, processes: list[Process], hour: int, samples: int, rows_before: dict[str, int],
              load_end: float, timeout: float) -> dict[str, tuple[float, float, int]]:
        """Feed watermarks until every process has all `samples`; per process (CPU-s then, seconds after the
        load's end, feeder messages published by then)."""
        feeder = Feeder()
        feeder.start()
        started = time.monotonic()
        try:
            finished = wait_for({p.name: (lambda p=p: p.done(hour, samples, rows_before[p.name]))
                                 for p in processes}, {p.name: p.service.pid for p in processes}, timeout)
        finally:
            feeder.stop()
        return {name: (cpu, started + waited - load_end, feeder.published_by(started + waited))
                for name, (cpu, waited) in finished.items()}

    def rows(self, processes: list[Process]) -> dict[str, int]:
        return {p.name: rows_inserted(p.vm_url) if p.vm_url else 0 for p in processes}

    def warm_up(self, processes: list[Process], shape: str) -> None:
        """A few seconds of the load into an hour of its own, until every process has it: start-up, the first
        pulls and the series tables are behind us (steady state, as a pipeline that has run a while)."""
        hour = self.hour()
        messages = load_messages(shape, int(self.rate(shape) * self.args.warmup), hour)
        samples = len(messages) * REQUEST_SHAPES[shape]
        for p in processes:
            if p.metrics_port:
                p.service.wait_ready(lambda p=p: services.http_get(f"http://127.0.0.1:{p.metrics_port}/-/ready")[0]
                                     == 200, timeout=120)
        before = self.rows(processes)
        load_end = time.monotonic() + publish_paced(messages, self.rate(shape))
        self.drain(processes, hour, samples, before, load_end, timeout=300)

    def idle_rate(self, processes: list[Process]) -> dict[str, float]:
        """CPU-s per second of each process with nothing arriving (a measurement interval, not a wait)."""
        stats = snapshot()
        before = {p.name: tree_cpu_seconds(p.service.pid, stats) for p in processes}
        started = time.monotonic()
        time.sleep(self.args.idle_seconds)
        stats, took = snapshot(), time.monotonic() - started
        return {p.name: (tree_cpu_seconds(p.service.pid, stats) - before[p.name]) / took for p in processes}

    def rate(self, shape: str) -> float:
        return self.args.rate * 1000 / REQUEST_SHAPES[shape]  # the same samples/s for every shape

    def core_seconds(self, variant: str, messages: list[core_cost.Message], rate: float,
                     fresh_every: int | None = None) -> float:
        archives, forwards = VARIANTS[variant]
        per_window, per_flush = int(rate * self.args.window_size), max(1, int(rate))  # flush: the sink's 1 s
        # cold, every run is as cold as the first (state rebuilt every few messages): one run is enough
        core, repeats = 0.0, 1 if fresh_every else self.args.core_repeats
        if archives:
            core += core_cost.best_of(repeats, core_cost.archive_core(messages, per_window, fresh_every=fresh_every))
        if forwards:
            core += core_cost.best_of(repeats, core_cost.forward_core(messages, per_flush, fresh_every=fresh_every))
        return core

    def run_config(self, processes: list[Process], variant: str, shape: str, idle: dict[str, float]) -> None:
        rate, series = self.rate(shape), REQUEST_SHAPES[shape]
        hour = self.hour()
        messages = load_messages(shape, int(rate * self.args.seconds), hour)
        samples = len(messages) * series
        title = f"{variant}, {shape}: {len(messages)} messages of {series} samples at {rate:g}/s"
        print(f"\n== {title}", flush=True)
        core = self.core_seconds(variant, messages, rate)
        cold = self.core_seconds(variant, messages, rate, fresh_every=RUNNER_BUNDLE)
        print(f"   core in-process: {core:.2f} CPU-s warm ({core * 1e6 / samples:.2f} per 1 M samples), {cold:.2f} "
              f"cold per {RUNNER_BUNDLE} messages ({cold * 1e6 / samples:.2f})", flush=True)
        before_rows = self.rows(processes)
        stats = snapshot()
        before = {p.name: tree_cpu_seconds(p.service.pid, stats) for p in processes}
        spies = ({p.name: Spy(f"{slug(variant)}-{shape}-{p.runner}", p.service.pid, self.work, self.args.profile_rate)
                  for p in processes} if self.args.profile else {})
        took = publish_paced(messages, rate)
        load_end = time.monotonic()
        print(f"   published in {took:.1f} s ({len(messages) / took:.1f}/s)", flush=True)
        drained = self.drain(processes, hour, samples, before_rows, load_end, timeout=max(300.0, 6 * self.args.seconds))
        rows = []
        for p in processes:
            cpu, waited, fed = drained[p.name]
            # the cold core models the streaming runner's per-bundle DoFn setup; the local loop's state lives a
            # bounded run (one window: the archive converter) or the process (the sink's Forwarder)
            cost = core_cost.Cost(cpu - before[p.name], core, len(messages) + fed, samples,
                                  cold if p.runner == "streaming" else math.nan)
            rows.append({"process": p.name, "runner": p.runner, "variant": variant, "shape": shape,
                         "messages": cost.messages, "samples": samples, "cpu_seconds": round(cost.cpu_seconds, 2),
                         "cpu_per_million": round(cost.per_million, 2),
                         "core_per_million": round(cost.core_per_million, 2),
                         "cold_core_per_million": figure(cost.cold_core_seconds * 1e6 / samples, 2),
                         "overhead_ms_per_message": round(cost.overhead_ms, 2),
                         "overhead_beyond_cold_ms": figure(cost.overhead_beyond_cold_ms, 2),
                         "overhead_share": round(cost.overhead_share, 3), "drain_seconds": round(waited, 1),
                         "idle_cpu_per_second": round(idle[p.name], 3)})
        print_rows(rows)
        profiles: dict[str, dict] = {}
        for name, spy in spies.items():
            profile = spy.stop()
            cpu = next(r["cpu_seconds"] for r in rows if r["process"] == name)
            print_profile(name, profile, self.args.top, self.args.profile_rate, cpu)
            if profile:
                profiles[name] = {"self": dict(profile.shares(profile.groups, 14)),
                                  "by_caller": dict(profile.shares(profile.callers, 14)),
                                  "functions": dict(profile.shares(profile.functions, 14))}
        self.results.append({"variant": variant, "shape": shape, "rows": rows, "profiles": profiles})

    def run_variant(self, variant: str, shapes: list[str]) -> None:
        processes = self.start_processes(variant)
        try:
            self.warm_up(processes, shapes[0])
            idle = self.idle_rate(processes)
            print(f"\n-- {variant}: idle CPU (s per s): "
                  + ", ".join(f"{name} {value:.3f}" for name, value in idle.items()), flush=True)
            for shape in shapes:
                self.run_config(processes, variant, shape, idle)
        finally:
            for p in processes:
                p.service.stop()
            self.unsubscribe([s for p in processes for s in p.subscriptions])

    def stop(self) -> None:
        for service in reversed(self.started):
            service.stop()


def figure(value: float, digits: int) -> float | None:
    """Rounded; None where there is no figure (NaN is not JSON)."""
    return None if math.isnan(value) else round(value, digits)


def print_rows(rows: list[dict]) -> None:
    print(f"  {'process':<28}{'messages':>9}{'CPU-s':>8}{'CPU-s/1M':>10}{'core/1M':>9}{'overhead':>10}"
          f"{'share':>7}{'beyond cold':>13}{'drain s':>9}")
    for r in rows:
        beyond = "-" if r["overhead_beyond_cold_ms"] is None else f"{r['overhead_beyond_cold_ms']:.2f} ms"
        print(f"  {r['process']:<28}{r['messages']:>9}{r['cpu_seconds']:>8.2f}{r['cpu_per_million']:>10.2f}"
              f"{r['core_per_million']:>9.2f}{r['overhead_ms_per_message']:>7.2f} ms{r['overhead_share']:>7.0%}"
              f"{beyond:>13}{r['drain_seconds']:>9.1f}", flush=True)


def print_summary(results: list[dict]) -> None:
    """One line per process, one column per shape: CPU-s per 1 M samples / overhead ms per message."""
    shapes = list(dict.fromkeys(r["shape"] for r in results))
    print("\nCPU-s per 1 M samples (core's part) / overhead per message, per shape:")
    print(f"  {'process':<28}" + "".join(f"{s:>30}" for s in shapes))
    cells: dict[str, dict[str, str]] = {}
    for result in results:
        for r in result["rows"]:
            cells.setdefault(r["process"], {})[r["shape"]] = (
                f"{r['cpu_per_million']:.2f} ({r['core_per_million']:.2f}) / {r['overhead_ms_per_message']:.2f} ms")
    for process, by_shape in cells.items():
        print(f"  {process:<28}" + "".join(f"{by_shape.get(s, '-'):>30}" for s in shapes))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.streaming_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=60.0,
                        help="messages/s for 1000-sample messages (default 60, as bench-cpu); larger messages are "
                             "sent at the same samples/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of load per configuration (default 20)")
    parser.add_argument("--shapes", default=",".join(REQUEST_SHAPES), help="request shapes (default all)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="pipeline variants (default all)")
    parser.add_argument("--window_size", type=int, default=10, help="both pipelines' --window_size (default 10)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load to warm up each variant (default 5)")
    parser.add_argument("--idle_seconds", type=float, default=10.0,
                        help="seconds of idle CPU measured per variant (default 10)")
    parser.add_argument("--core_repeats", type=int, default=3, help="runs of the in-process core, best kept")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                        help="py-spy both processes over each load (default on)")
    parser.add_argument("--profile_rate", type=int, default=100, help="py-spy samples/s (default 100)")
    parser.add_argument("--top", type=int, default=10, help="groups and functions shown per profile (default 10)")
    parser.add_argument("--quick", action="store_true", help="8 s of load per configuration")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.seconds = min(args.seconds, 8.0)
    shapes = [s for s in args.shapes.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    if not shapes or set(shapes) - set(REQUEST_SHAPES):
        parser.error(f"--shapes: use {sorted(REQUEST_SHAPES)}")
    if not variants or set(variants) - set(VARIANTS):
        parser.error(f"--variants: use {sorted(VARIANTS)}")
    if args.rate <= 0 or args.seconds <= 0 or args.warmup <= 0 or args.core_repeats < 1:
        parser.error("--rate, --seconds, --warmup and --core_repeats must be positive")
    if args.profile:
        try:
            services.require_binary("py-spy", "pip install py-spy (a test dependency), or run with --no-profile")
        except services.ServiceError as exc:
            parser.error(str(exc))
    bench = Bench(args)
    print(f"(logs and profiles in {bench.work})", flush=True)
    try:
        bench.start_emulator()
        for variant in variants:
            bench.run_variant(variant, shapes)
    finally:
        bench.stop()
    print_summary(bench.results)
    if args.json:
        args.json.write_text(json.dumps(bench.results, indent=1))
    print(f"\n(logs and profiles in {bench.work})")


if __name__ == "__main__":
    main()
