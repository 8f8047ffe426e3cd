"""`make bench-forward`: receiver -> Pub/Sub -> pipeline -> VictoriaMetrics, against vmagent -> VictoriaMetrics.

Same pre-built load, same run, same machine. Throughput is samples over the time from the first
request to the last sample stored in VictoriaMetrics (its own vm_rows_inserted_total counter).
Freshness sends one probe sample every 100 ms and records, per probe, the time from the 2xx to
the probe being visible in VictoriaMetrics' /api/v1/export (polled every 50 ms).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.load import HEADERS, SERIES_PER_REQUEST, SHAPES, build_stream, run_load
from tools import services
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1

TOPIC, SUBSCRIPTION = "projects/bench-project/topics/bench-forward", "projects/bench-project/subscriptions/bench-fwd"


def rows_inserted(vm_url: str) -> int:
    status, body = services.http_get(f"{vm_url}/metrics", timeout=10)
    return int(sum(float(m) for m in re.findall(r'^vm_rows_inserted_total\{type="promremotewrite"\} (\S+)$',
                                                 body.decode(), re.M)))


def throughput(name: str, url: str, vm_url: str, streams: list, duration: float, shape: str) -> dict:
    before = rows_inserted(vm_url)
    started = time.time()
    load = run_load(url, streams, duration)
    sent = load["requests_ok"] * SERIES_PER_REQUEST
    services.wait_until(lambda: rows_inserted(vm_url) - before >= sent, 600, f"{name}: {sent} rows in VM",
                        interval=0.2)
    seconds = time.time() - started
    kib = sum(len(b) for process in streams for stream in process for b in stream) / max(
        1, sum(len(stream) for process in streams for stream in process)) / 1024
    result = {"target": name, "shape": shape, "message_kib": round(kib, 1), "samples": sent,
              "seconds": round(seconds, 2), "samples_per_second": round(sent / seconds), "sender_samples_per_second":
              round(load["samples_per_second"]), "statuses": load["statuses"]}
    print(json.dumps(result), flush=True)
    return result


def freshness(name: str, url: str, vm_url: str, probes: int) -> dict:
    """Latency from a probe's 2xx to its visibility in VictoriaMetrics' export."""
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()
    metric = f"fresh_probe_{name.replace('-', '_')}"

    def poll() -> None:
        query = urllib.request.quote(f'{{__name__="{metric}"}}')
        while not done.is_set():
            with urllib.request.urlopen(f"{vm_url}/api/v1/export?match[]={query}", timeout=10) as response:
                now = time.monotonic()
                for line in response.read().decode().splitlines():
                    seq = json.loads(line)["metric"]["seq"]
                    seen.setdefault(seq, now)
            time.sleep(0.05)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    for i in range(probes):
        body = codec.encode(build_v1([Series({"__name__": metric, "seq": str(i)}, [(int(time.time() * 1000), 1.0)])]))
        request = urllib.request.Request(url, data=body, headers=HEADERS, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert 200 <= response.status < 300
        acked[str(i)] = time.monotonic()
        time.sleep(0.1)
    services.wait_until(lambda: set(acked) <= set(seen), 120, f"{name}: every probe visible", interval=0.2)
    done.set()
    latencies = sorted(seen[k] - acked[k] for k in acked)
    result = {"target": name, "probes": probes, "p50_seconds": round(statistics.median(latencies), 3),
              "p99_seconds": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3)}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench-forward", description=__doc__)
    parser.add_argument("--streams", type=int, default=4, help="sender streams (threads) in all (default 4)")
    parser.add_argument("--requests", type=int, default=60, help="1000-sample requests per stream (default 60)")
    parser.add_argument("--probes", type=int, default=100, help="freshness probes per target (default 100)")
    parser.add_argument("--shapes", default="small,node",
                        help="message sizes, comma-separated: small (~12 KiB: 6 short labels) and node (~44 KiB: 10 "
                             "node_exporter-like labels) (default both)")
    args = parser.parse_args()
    shapes = [s for s in args.shapes.split(",") if s]
    if set(shapes) - set(SHAPES):
        parser.error(f"unknown --shapes {sorted(set(shapes) - set(SHAPES))}: use {sorted(SHAPES)}")
    log_dir = Path(tempfile.mkdtemp(prefix="bench-forward-"))
    loads = {}
    for n, shape in enumerate(shapes):
        # each shape its own hour of timestamps: the second load never overwrites the first in VM
        start_ms = int(time.time() * 1000) - (3 + n) * 3_600_000
        streams = [build_stream(s, args.requests, start_ms, shape=shape) for s in range(args.streams)]
        loads[shape] = [streams[i::2] for i in range(2)]
    duration = 600.0  # send everything; the load is bounded by its size
    started: list[services.Service] = []
    try:
        emulator, host = services.start_pubsub_emulator(log_dir)
        started.append(emulator)
        services.create_topic_and_subscription(host, TOPIC, SUBSCRIPTION)
        vm, vm_url = services.start_victoria_metrics(log_dir, name="vm-pipeline")
        started.append(vm)
        from transforms.core.sink.config import from_flags

        sink = from_flags([f"{vm_url}/api/v1/write"])[0]
        services.create_subscription(host, TOPIC, sink.subscription_for(SUBSCRIPTION))
        receiver, receiver_url = services.start_receiver(log_dir, host, TOPIC)
        started.append(receiver)
        pipeline = services.Service("pipeline", [sys.executable, "-m", "pipeline", "--runner=DirectRunner",
                                                 f"--input_subscription={SUBSCRIPTION}",
                                                 f"--archive_path={log_dir / 'archive'}", "--window_size=10",
                                                 f"--remote_write_url={vm_url}/api/v1/write", "--metrics_port=0"],
                                    log_dir, env={"PUBSUB_EMULATOR_HOST": host}, cwd=services.ROOT)
        started.append(pipeline)
        time.sleep(8)  # the pipeline's launch checks
        if not pipeline.alive():
            raise services.ServiceError(f"pipeline exited:\n{pipeline.log_tail()}")
        vm2, vm2_url = services.start_victoria_metrics(log_dir, name="vm-vmagent")
        agent, agent_url = services.start_vmagent(log_dir, f"{vm2_url}/api/v1/write")
        started += [vm2, agent]

        ratios = {}
        for shape, per_process in loads.items():
            ours = throughput("pipeline", f"{receiver_url}/api/v1/write", vm_url, per_process, duration, shape)
            theirs = throughput("vmagent", f"{agent_url}/api/v1/write", vm2_url, per_process, duration, shape)
            ratios[f"{shape} ({ours['message_kib']} KiB)"] = round(
                ours["samples_per_second"] / theirs["samples_per_second"], 3)
        fresh_ours = freshness("pipeline", f"{receiver_url}/api/v1/write", vm_url, args.probes)
        fresh_theirs = freshness("vmagent", f"{agent_url}/api/v1/write", vm2_url, args.probes)
        print(json.dumps({
            "throughput_ratio_pipeline_over_vmagent": ratios, "goal": "throughput ratio >= 1.0",
            "freshness_pipeline_s": [fresh_ours["p50_seconds"], fresh_ours["p99_seconds"]],
            "freshness_vmagent_s": [fresh_theirs["p50_seconds"], fresh_theirs["p99_seconds"]]}), flush=True)
    finally:
        for service in reversed(started):
            service.stop()


if __name__ == "__main__":
    main()
