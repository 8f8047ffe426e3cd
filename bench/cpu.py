"""`make bench-cpu`: CPU-seconds per 1 M samples, per process, ours against vmagent's, in one run.

For each request shape x connections per sender, the same paced load (2 sender processes, a fixed
rate below saturation) goes first to vmagent -> VictoriaMetrics, then to our receiver, whose Pub/Sub
topic feeds three `python -m pipeline` processes at once: archiving only (NDJSON), forwarding only
(to a VictoriaMetrics) and both. Each process's CPU is utime + stime of its process tree
(/proc/PID/stat, children included), from the start of the load to the last of its samples
stored: vmagent's when its VictoriaMetrics holds them all, the receiver's when the last request is
answered, a pipeline's when its finalised archive lines and/or its sink's accepted samples (and
its VictoriaMetrics' rows) reach the load's samples. The Pub/Sub emulator is reported, not counted.

Then, to size batch workers: an archive-only run over a backlog (NDJSON, then Parquet), and
`python -m pipeline.restore` from each archive into VictoriaMetrics, each whole process.

--profile (default) attaches py-spy (CPU samples only: no --idle; --nonblocking, so the measured
processes are never paused) to every measured Python process and prints where the CPU goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import profile_groups
from bench.forward import rows_inserted
from bench.load import build_stream, run_load
from bench.proc_cpu import per_million, ratio, snapshot, tree_cpu_seconds
from tools import services

PROJECT = "projects/bench-cpu"
TOPIC, IDLE_TOPIC, BACKLOG_TOPIC = (f"{PROJECT}/topics/{name}" for name in ("live", "idle", "backlog"))
# request shape -> series (one sample each) per request; labels are node_exporter-like, 10 per series
REQUEST_SHAPES = {"1000x10": 1000, "prom-2000": 2000}
LABELS = "node"
VARIANTS = {  # pipeline variant -> (archives, forwards)
    "archive": (True, False),
    "forward": (False, True),
    "archive+forward": (True, True),
}


def slug(name: str) -> str:
    """A variant's name as it appears in subscription, file and service names."""
    return name.replace("+", "-")


@dataclass
class Pipeline:
    variant: str
    service: services.Service
    metrics_url: str
    vm_url: str | None


def pipeline_counters(metrics_url: str) -> dict[str, float]:
    """Finalised archive lines and samples the sinks accepted, from the pipeline's own /metrics."""
    _, body = services.http_get(metrics_url, timeout=10)
    text = body.decode()

    def total(name: str) -> float:
        return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))

    return {"lines": total("pipeline_archive_lines_total"), "sent": total("pipeline_sink_samples_sent_total")}


class Spy:
    """py-spy recording one process tree (raw collapsed stacks) until stopped."""

    def __init__(self, name: str, pid: int, work: Path, rate: int, gil_only: bool = False) -> None:
        self.name = name
        self.output = work / f"profile-{name}.txt"
        binary = services.require_binary("py-spy", "pip install py-spy (a test dependency)")
        self.log = open(work / f"py-spy-{name}.log", "ab")
        self.process = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--format", "raw", "--output", str(self.output),
             "--full-filenames", "--nolineno", "--nonblocking", "--subprocesses", "--rate", str(rate),
             *(["--gil"] if gil_only else [])],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> profile_groups.Profile | None:
        """SIGINT makes py-spy write its file; None (with the reason printed) if it could not record."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()
        if not self.output.exists():
            print(f"   (no profile of {self.name}: see {self.log.name})", flush=True)
            return None
        return profile_groups.summarize(profile_groups.parse_raw(self.output.read_text()), str(services.ROOT))


def print_profile(name: str, profile: profile_groups.Profile | None, top: int, rate: int,
                  cpu_seconds: float | None = None) -> None:
    if profile is None or not profile.samples:
        return
    measured = f"; CPU measured {cpu_seconds:.1f} s" if cpu_seconds is not None else ""
    print(f"  {name}: {profile.samples} samples counted active "
          f"(= {profile.samples / rate:.1f} s at {rate}/s{measured})")
    print("    self:      " + ", ".join(f"{g} {s:.0%}" for g, s in profile.shares(profile.groups, top)))
    print("    by caller: " + ", ".join(f"{g} {s:.0%}" for g, s in profile.shares(profile.callers, top)))
    for function, share in profile.shares(profile.functions, top):
        print(f"    {share:6.1%}  {function}")


def build_load(shape: str, senders: int, connections: int, requests: int, start_ms: int) -> list[list[list[bytes]]]:
    """Per sender process, per connection, the bodies; every connection owns its own series."""
    per_stream = max(1, requests // (senders * connections))
    return [[build_stream(p * connections + c, per_stream, start_ms, shape=LABELS, series=REQUEST_SHAPES[shape])
             for c in range(connections)] for p in range(senders)]


def paced(url: str, load: list[list[list[bytes]]], rate: float, series: int) -> tuple[int, str]:
    """Send the load at `rate` requests/s; returns the samples answered 2xx and what was sent, as text."""
    result = run_load(url, load, duration=3600.0, rate=rate)
    requests = result["requests_ok"] + result["requests_failed"]
    return result["requests_ok"] * series, (f"{requests} requests in {result['seconds']:.1f} s "
                                            f"({requests / result['seconds']:.1f}/s), statuses {result['statuses']}")


def wait_for(checks: dict[str, Callable[[], bool]], roots: dict[str, int], timeout: float,
             ) -> dict[str, tuple[float, float]]:
    """Poll every check; at the moment each one passes, read its process tree's CPU. Returns
    name -> (CPU-seconds then, seconds waited). A check that cannot reach its service yet counts as not done."""
    started = time.monotonic()
    seen: dict[str, tuple[float, float]] = {}
    while len(seen) < len(checks):
        if time.monotonic() - started > timeout:
            missing = sorted(set(checks) - set(seen))
            raise services.ServiceError(f"timed out after {timeout:.0f}s waiting for {missing}")
        stats = snapshot()
        for name, check in checks.items():
            passed = False
            with contextlib.suppress(OSError, ValueError):
                passed = name not in seen and check()
            if passed:
                seen[name] = (tree_cpu_seconds(roots[name], stats), time.monotonic() - started)
        time.sleep(0.2)
    return seen


def row(process: str, samples: int, cpu: float, reference: float | None, lag: float | None = None) -> dict:
    cost = per_million(cpu, samples)
    return {"process": process, "samples": samples, "cpu_seconds": round(cpu, 2),
            "cpu_per_million": round(cost, 2), "x_vmagent": round(ratio(cost, reference), 2) if reference else None,
            "drain_seconds": round(lag, 1) if lag is not None else None}


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"  {'process':<44}{'samples':>11}{'CPU-s':>9}{'CPU-s/1M':>10}{'x vmagent':>11}{'drain s':>9}")
    for r in rows:
        ratio_text = f"{r['x_vmagent']:.2f}" if r["x_vmagent"] is not None else "-"
        drain = f"{r['drain_seconds']:.1f}" if r["drain_seconds"] is not None else "-"
        print(f"  {r['process']:<44}{r['samples']:>11,}{r['cpu_seconds']:>9.2f}{r['cpu_per_million']:>10.2f}"
              f"{ratio_text:>11}{drain:>9}", flush=True)


def print_summary(results: list[dict]) -> None:
    """CPU-s per 1 M samples, one column per shape x connections, one line per process."""
    configs = [r for r in results if "rows" in r]
    if not configs:
        return
    names = [f"{r['shape']} x{r['connections']}" for r in configs]
    print("\nCPU-s per 1 M samples (x vmagent), per shape x connections per sender:")
    print(f"  {'process':<38}" + "".join(f"{n:>18}" for n in names))
    for i, process in enumerate(r["process"] for r in configs[0]["rows"]):
        cells = []
        for config in configs:
            r = config["rows"][i]
            x = f" ({r['x_vmagent']:.2f}x)" if r["x_vmagent"] is not None else ""
            cells.append(f"{r['cpu_per_million']:.2f}{x}")
        print(f"  {process:<38}" + "".join(f"{c:>18}" for c in cells))


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
        self.started: list[services.Service] = []
        self.results: list[dict] = []

    def start(self, service_and_url: tuple[services.Service, str]) -> str:
        self.started.append(service_and_url[0])
        return service_and_url[1]

    def start_services(self) -> None:
        from transforms.core.sink.config import from_flags

        emulator, self.host = services.start_pubsub_emulator(self.work)
        self.emulator = emulator
        self.started.append(emulator)
        self.vm_agent_url = self.start(services.start_victoria_metrics(self.work, name="vm-vmagent"))
        self.agent_url = self.start(services.start_vmagent(self.work, f"{self.vm_agent_url}/api/v1/write"))
        self.agent = self.started[-1]
        subscriptions = {variant: f"{PROJECT}/subscriptions/{slug(variant)}" for variant in VARIANTS}
        services.create_topic_and_subscription(self.host, TOPIC, subscriptions["archive"])
        # forwarding only: the pipeline's archive loop always runs, so it reads a topic nobody publishes to,
        # while the sink's own subscription is on the live topic
        services.create_topic_and_subscription(self.host, IDLE_TOPIC, subscriptions["forward"])
        services.create_subscription(self.host, TOPIC, subscriptions["archive+forward"])
        self.pipelines: list[Pipeline] = []
        for variant, (_, forwards) in VARIANTS.items():
            sub = subscriptions[variant]
            argv = [sys.executable, "-m", "pipeline", "--runner=DirectRunner", f"--input_subscription={sub}",
                    f"--archive_path={self.work / ('archive-' + slug(variant))}",
                    f"--window_size={self.args.window_size}"]
            vm_url = None
            if forwards:
                vm_url = self.start(services.start_victoria_metrics(self.work, name=f"vm-{slug(variant)}"))
                sink = from_flags([f"{vm_url}/api/v1/write"])[0]
                services.create_subscription(self.host, TOPIC, sink.subscription_for(sub))
                argv.append(f"--remote_write_url={vm_url}/api/v1/write")
            port = services.free_port()
            service = services.Service(f"pipeline-{slug(variant)}", [*argv, f"--metrics_port={port}"],
                                       self.work, env={"PUBSUB_EMULATOR_HOST": self.host}, cwd=services.ROOT)
            self.started.append(service)
            self.pipelines.append(Pipeline(variant, service, f"http://127.0.0.1:{port}/metrics", vm_url))
        self.receiver_url = self.start(services.start_receiver(self.work, self.host, TOPIC))
        self.receiver = self.started[-1]
        for p in self.pipelines:
            p.service.wait_ready(lambda p=p: services.http_get(p.metrics_url.replace("/metrics", "/-/ready"))[0]
                                 == 200, timeout=120)
        stats = snapshot()
        self.startup = {p.variant: tree_cpu_seconds(p.service.pid, stats) for p in self.pipelines}
        self.startup["receiver"] = tree_cpu_seconds(self.receiver.pid, stats)
        print("start-up CPU-s (not counted below): " + ", ".join(f"{k} {v:.1f}" for k, v in self.startup.items()),
              flush=True)

    def spies(self, names_pids: dict[str, int], tag: str) -> dict[str, Spy]:
        if not self.args.profile:
            return {}
        return {name: Spy(f"{tag}-{slug(name)}", pid, self.work, self.args.profile_rate,
                          self.args.profile_gil) for name, pid in names_pids.items()}

    def run_config(self, index: int, shape: str, connections: int) -> None:
        args, series = self.args, REQUEST_SHAPES[shape]
        rate = args.rate * 1000 / series  # the same samples/s for every shape
        requests = int(rate * args.seconds)
        start_ms = int(time.time() * 1000) - (index + 2) * 3_600_000  # each configuration its own hour
        load = build_load(shape, args.senders, connections, requests, start_ms)
        kib = sum(len(b) for p in load for s in p for b in s) / sum(len(s) for p in load for s in p) / 1024
        title = (f"{shape}: {series} series x 10 labels per request ({kib:.1f} KiB snappy), {args.senders} senders x "
                 f"{connections} connections, {rate:g} requests/s ({rate * series:,.0f} samples/s)")
        print(f"\n== {title}", flush=True)
        timeout = max(180.0, 6 * args.seconds)

        rows_before = rows_inserted(self.vm_agent_url)
        cpu_before = tree_cpu_seconds(self.agent.pid)
        sent, sending = paced(f"{self.agent_url}/api/v1/write", load, rate, series)
        load_end = time.monotonic()
        services.wait_until(lambda: rows_inserted(self.vm_agent_url) - rows_before >= sent, timeout,
                            "vmagent's samples in VictoriaMetrics", interval=0.2)
        agent_cpu = tree_cpu_seconds(self.agent.pid) - cpu_before
        reference = per_million(agent_cpu, sent)
        rows = [row("vmagent -> VictoriaMetrics", sent, agent_cpu, reference, time.monotonic() - load_end)]
        print(f"   vmagent: {sent:,} samples accepted; {sending}", flush=True)

        roots = {"receiver": self.receiver.pid, **{p.variant: p.service.pid for p in self.pipelines}}
        stats = snapshot()
        before = {name: tree_cpu_seconds(pid, stats) for name, pid in {**roots, "emulator": self.emulator.pid}.items()}
        counters = {p.variant: pipeline_counters(p.metrics_url) for p in self.pipelines}
        vm_rows = {p.variant: rows_inserted(p.vm_url) for p in self.pipelines if p.vm_url}
        spies = self.spies(roots, f"{index}-{shape}-{connections}")
        ours, sending = paced(f"{self.receiver_url}/api/v1/write", load, rate, series)
        receiver_cpu = tree_cpu_seconds(self.receiver.pid) - before["receiver"]
        print(f"   receiver: {ours:,} samples accepted; {sending}", flush=True)

        def done(p: Pipeline) -> bool:
            archives, forwards = VARIANTS[p.variant]
            now = pipeline_counters(p.metrics_url)
            return ((not archives or now["lines"] - counters[p.variant]["lines"] >= ours)
                    and (not forwards or (now["sent"] - counters[p.variant]["sent"] >= ours
                                          and rows_inserted(p.vm_url) - vm_rows[p.variant] >= ours)))

        finished = wait_for({p.variant: (lambda p=p: done(p)) for p in self.pipelines}, roots, timeout)
        emulator_cpu = tree_cpu_seconds(self.emulator.pid) - before["emulator"]
        rows.append(row("receiver (gunicorn master + workers)", ours, receiver_cpu, reference))
        costs = {"receiver": receiver_cpu}
        for p in self.pipelines:
            cpu, waited = finished[p.variant]
            costs[p.variant] = cpu - before[p.variant]
            rows.append(row(f"pipeline {p.variant}", ours, costs[p.variant], reference, waited))
        rows.append(row("ours: receiver + forward", ours, costs["receiver"] + costs["forward"], reference))
        rows.append(row("ours: receiver + archive+forward", ours, costs["receiver"] + costs["archive+forward"],
                        reference))
        rows.append(row("Pub/Sub emulator (not counted)", ours, emulator_cpu, None))
        print_table(title, rows)
        profiles = {name: spy.stop() for name, spy in spies.items()}
        if profiles:
            print(f"\n where the CPU goes ({title}):")
            for name, profile in profiles.items():
                print_profile(name, profile, self.args.top, self.args.profile_rate, costs.get(name))
        shares = {n: {"self": dict(p.shares(p.groups, 12)), "by_caller": dict(p.shares(p.callers, 12))}
                  for n, p in profiles.items() if p}
        self.results.append({"shape": shape, "connections": connections, "requests_per_second": rate,
                             "startup_cpu_seconds": self.startup, "rows": rows, "profiles": shares})

    def run_backlog_and_restore(self) -> None:
        """Section 4: batch work, each whole process from its start (start-up included)."""
        from bench.pipeline import publish_backlog

        messages = self.args.backlog
        expected = messages * 1000
        bodies = build_stream(0, messages, int(time.time() * 1000) - 30 * 3_600_000, shape=LABELS)
        subs = {fmt: f"{PROJECT}/subscriptions/backlog-{fmt}" for fmt in ("ndjson", "parquet")}
        services.create_topic_and_subscription(self.host, BACKLOG_TOPIC, subs["ndjson"])
        services.create_subscription(self.host, BACKLOG_TOPIC, subs["parquet"])
        publish_backlog(BACKLOG_TOPIC, bodies)
        print(f"\n== batch work: a backlog of {messages} messages of 1000 series x 10 labels", flush=True)
        rows = []
        for fmt, sub in subs.items():
            port = services.free_port()
            service = services.Service(
                f"pipeline-backlog-{fmt}",
                [sys.executable, "-m", "pipeline", "--runner=DirectRunner", f"--input_subscription={sub}",
                 f"--archive_path={self.work / ('backlog-' + fmt)}", f"--archive_format={fmt}",
                 f"--window_size={self.args.window_size}", f"--metrics_port={port}"],
                self.work, env={"PUBSUB_EMULATOR_HOST": self.host}, cwd=services.ROOT)
            self.started.append(service)
            spies = self.spies({f"archive-backlog-{fmt}": service.pid}, "batch")
            metrics = f"http://127.0.0.1:{port}/metrics"

            def archived(metrics: str = metrics) -> bool:
                return pipeline_counters(metrics)["lines"] >= expected

            finished = wait_for({fmt: archived}, {fmt: service.pid}, max(300.0, messages * 0.5))
            rows.append(row(f"archive-only over a backlog, {fmt}", expected, finished[fmt][0], None))
            self.print_spies(spies, finished[fmt][0])
            service.stop()
        vm_url = self.start(services.start_victoria_metrics(self.work, name="vm-restore"))
        for fmt in ("parquet", "ndjson"):
            before = rows_inserted(vm_url)
            cpu = self.restore(fmt, vm_url)
            restored = rows_inserted(vm_url) - before
            rows.append(row(f"restore from {fmt} into VictoriaMetrics", restored, cpu, None))
            if restored != expected:
                print(f"   restore from {fmt}: VictoriaMetrics gained {restored:,} rows, expected {expected:,}")
        print_table("batch work (whole process, start-up included)", rows)
        self.results.append({"batch": rows})

    def restore(self, fmt: str, vm_url: str) -> float:
        """Run a restore to its end; its CPU (children included) from the kernel's accounting at exit."""
        with open(self.work / f"restore-{fmt}.log", "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "pipeline.restore",
                                        f"--archive_path={self.work / ('backlog-' + fmt)}",
                                        f"--remote_write_url={vm_url}/api/v1/write"],
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=services.ROOT)
            spies = self.spies({f"restore-{fmt}": process.pid}, "batch")
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
        self.print_spies(spies, usage.ru_utime + usage.ru_stime)
        if process.returncode != 0:
            raise services.ServiceError(f"restore from {fmt} exited with {process.returncode}: see {log.name}")
        return usage.ru_utime + usage.ru_stime

    def print_spies(self, spies: dict[str, Spy], cpu_seconds: float | None = None) -> None:
        for name, spy in spies.items():
            print_profile(name, spy.stop(), self.args.top, self.args.profile_rate, cpu_seconds)

    def stop(self) -> None:
        for service in reversed(self.started):
            service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=60.0,
                        help="requests/s in all for 1000-sample requests (default 60); larger requests are sent at "
                             "the same samples/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of load per configuration (default 20)")
    parser.add_argument("--senders", type=int, default=2, help="sender processes (default 2)")
    parser.add_argument("--connections", default="1,4", help="connections per sender, comma-separated (default 1,4)")
    parser.add_argument("--shapes", default=",".join(REQUEST_SHAPES),
                        help=f"request shapes, comma-separated: {', '.join(REQUEST_SHAPES)} (default both)")
    parser.add_argument("--window_size", type=int, default=10, help="the pipelines' --window_size (default 10)")
    parser.add_argument("--backlog", type=int, default=1000,
                        help="1000-series messages for the archive-only backlog and restore runs (default 1000; "
                             "0 skips them)")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                        help="py-spy every measured Python process (default on)")
    parser.add_argument("--profile_rate", type=int, default=100, help="py-spy samples/s (default 100)")
    parser.add_argument("--profile_gil", action="store_true",
                        help="py-spy --gil: only the thread holding the GIL (Python CPU; misses C code releasing it)")
    parser.add_argument("--top", type=int, default=8, help="groups and functions shown per profile (default 8)")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 8 s per configuration, 1 connection per sender, a 300-message backlog")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.connections, args.backlog = min(args.seconds, 8.0), "1", min(args.backlog, 300)
    shapes = [s for s in args.shapes.split(",") if s]
    if set(shapes) - set(REQUEST_SHAPES):
        parser.error(f"unknown --shapes {sorted(set(shapes) - set(REQUEST_SHAPES))}: use {sorted(REQUEST_SHAPES)}")
    try:
        connections = [int(c) for c in args.connections.split(",") if c]
    except ValueError:
        parser.error(f"--connections must be integers, comma-separated, got {args.connections!r}")
    if not connections or min(connections) < 1 or args.rate <= 0 or args.seconds <= 0 or args.senders < 1:
        parser.error("--connections, --rate, --seconds and --senders must be positive")

    if args.profile:
        try:
            services.require_binary("py-spy", "pip install py-spy (a test dependency), or run with --no-profile")
        except services.ServiceError as exc:
            parser.error(str(exc))
    bench = Bench(args)
    print(f"(logs and profiles in {bench.work})", flush=True)
    try:
        bench.start_services()
        configs = [(shape, c) for shape in shapes for c in connections]
        for index, (shape, c) in enumerate(configs):
            bench.run_config(index, shape, c)
        if args.backlog > 0:
            bench.run_backlog_and_restore()
    finally:
        bench.stop()
    print_summary(bench.results)
    if args.json:
        args.json.write_text(json.dumps(bench.results, indent=1))
    print(f"\n(logs and profiles in {bench.work})")


if __name__ == "__main__":
    main()
