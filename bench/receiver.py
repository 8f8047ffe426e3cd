"""`make bench-receiver`: accepted samples/s of the receiver against real remote-write receivers.

The same pre-built 1000-series requests go, from 2 sender processes, to:
  receiver (+ Pub/Sub emulator), VictoriaMetrics, Prometheus 2.42, and vmagent -> VictoriaMetrics.
Each target runs alone, one after another, on this machine; the ratios are what matter.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.load import SERIES_PER_REQUEST, build_stream, run_load
from tools import services


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per target (default 10)")
    parser.add_argument("--processes", type=int, default=2, help="sender processes (default 2)")
    parser.add_argument("--streams", type=int, default=4, help="connections per sender process (default 4)")
    parser.add_argument("--requests", type=int, default=2000,
                        help="pre-built requests per stream; caps a run (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="receiver gunicorn workers (default 2)")
    parser.add_argument("--only", nargs="*", help="targets to run: receiver victoria-metrics prometheus vmagent")
    args = parser.parse_args()

    start_ms = int(time.time() * 1000) - 20 * 60 * 1000  # recent enough for Prometheus' head block
    print(f"building {args.processes * args.streams * args.requests} requests of {SERIES_PER_REQUEST} series ...",
          flush=True)
    load = [[build_stream(p * args.streams + s, args.requests, start_ms) for s in range(args.streams)]
            for p in range(args.processes)]
    size = sum(len(b) for proc in load for stream in proc for b in stream) / sum(
        len(stream) for proc in load for stream in proc)
    print(f"average compressed request: {size / 1024:.1f} KiB", flush=True)

    log_dir = Path(tempfile.mkdtemp(prefix="bench-receiver-"))
    results: dict[str, dict] = {}
    targets = args.only or ["receiver", "victoria-metrics", "prometheus", "vmagent"]

    def measure(name: str, url: str) -> None:
        print(f"-> {name}: {url}", flush=True)
        results[name] = run_load(url, load, args.duration)
        r = results[name]
        print(f"   {r['samples_per_second']:>12,.0f} samples/s  ({r['requests_ok']} ok, {r['requests_failed']} "
              f"failed, statuses {r['statuses']})", flush=True)

    if "receiver" in targets:
        emulator, host = services.start_pubsub_emulator(log_dir)
        topic = "projects/bench-project/topics/bench"
        try:
            services.create_topic_and_subscription(host, topic, "projects/bench-project/subscriptions/bench-sub")
            receiver, url = services.start_receiver(log_dir, host, topic, args=["--workers", str(args.workers)])
            with services.stopping(receiver):
                measure("receiver", f"{url}/api/v1/write")
        finally:
            emulator.stop()
    if "victoria-metrics" in targets:
        vm, url = services.start_victoria_metrics(log_dir)
        with services.stopping(vm):
            measure("victoria-metrics", f"{url}/api/v1/write")
    if "prometheus" in targets:
        prom, url = services.start_prometheus(log_dir, "global: {scrape_interval: 1m}\n", receiver=True)
        with services.stopping(prom):
            measure("prometheus", f"{url}/api/v1/write")
    if "vmagent" in targets:
        vm, vm_url = services.start_victoria_metrics(log_dir, name="victoria-metrics-behind-vmagent")
        agent, url = services.start_vmagent(log_dir, f"{vm_url}/api/v1/write")
        with services.stopping(vm, agent):
            measure("vmagent", f"{url}/api/v1/write")

    print("\naccepted samples/s (same load, same machine, same run):")
    for name, r in results.items():
        line = f"  {name:<18} {r['samples_per_second']:>12,.0f}"
        if "receiver" in results and name != "receiver" and r["samples_per_second"]:
            line += f"   receiver/{name} = {results['receiver']['samples_per_second'] / r['samples_per_second']:.2f}"
        print(line)
    print(f"(service logs in {log_dir})")


if __name__ == "__main__":
    main()
