"""`make run`: the embedded default on one machine.

Starts the Pub/Sub emulator (topic + subscription), the receiver under gunicorn, and, when
Debian's prometheus and prometheus-node-exporter are installed, a demo Prometheus that scrapes
itself and node_exporter and remote-writes to the receiver. Prints a status line from the
receiver's and the pipeline's own /metrics every few seconds; Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tools import services
from transforms.core.sink import config as sink_config

REMOTE_WRITE_SNIPPET = """remote_write:
  - url: http://{host}:{port}/api/v1/write"""


Samples = list[tuple[str, dict[str, str], float]]


def scrape(url: str) -> Samples | str:
    """Every sample of a /metrics page as (name, labels, value), or why it could not be read."""
    try:
        status, body = services.http_get(f"{url}/metrics", timeout=5)
    except OSError as exc:
        return f"{url}/metrics unreachable ({exc})"
    if status != 200:
        return f"{url}/metrics answered {status}"
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(body.decode())
            for s in family.samples]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(value for n, found, value in samples if n == name and labels.items() <= found.items())


def status_line(receiver_url: str) -> str:
    samples = scrape(receiver_url)
    if isinstance(samples, str):
        return samples
    rejected = sum(total(samples, "receiver_requests_total", code=str(c)) for c in (400, 401, 413, 415))
    unavailable = total(samples, "receiver_requests_total", code="503")
    return (f"received {total(samples, 'receiver_samples_accepted_total'):,.0f} samples "
            f"in {total(samples, 'receiver_requests_total', code='204'):,.0f} requests "
            f"| published {total(samples, 'receiver_published_messages_total'):,.0f} messages "
            f"| rejected {rejected:,.0f} (4xx) | unavailable {unavailable:,.0f} (503)")


def pipeline_status(pipeline_url: str) -> str:
    """The pipeline's own running totals, from its /metrics."""
    samples = scrape(pipeline_url)
    if isinstance(samples, str):
        return samples
    backlog = max((v for n, _, v in samples if n == "pipeline_subscription_oldest_unacked_message_age_seconds"),
                  default=0.0)
    text = (f"archived {total(samples, 'pipeline_archive_samples_total'):,.0f} samples in "
            f"{total(samples, 'pipeline_archive_files_total'):,.0f} files | dead-lettered "
            f"{total(samples, 'pipeline_archive_dead_letters_total'):,.0f} messages | backlog age {backlog:.0f}s")
    sinks = sorted({labels["sink"] for n, labels, _ in samples if n == "pipeline_sink_samples_sent_total"})
    if sinks:
        forwarded = ", ".join(f"{name} {total(samples, 'pipeline_sink_samples_sent_total', sink=name):,.0f}"
                              for name in sinks)
        refused = total(samples, "pipeline_sink_samples_dead_lettered_total")
        text += f" | forwarded samples: {forwarded} | refused by sinks (dead-lettered) {refused:,.0f}"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=9201, help="receiver port (default 9201)")
    parser.add_argument("--pubsub-port", type=int, default=8085, help="Pub/Sub emulator port (default 8085)")
    parser.add_argument("--project", default="local-project", help="Pub/Sub project id (default local-project)")
    parser.add_argument("--topic", default="remote-write", help="topic name (default remote-write)")
    parser.add_argument("--subscription", default="remote-write-pipeline", help="subscription name")
    parser.add_argument("--work-dir", default=".run", help="logs and emulator data (default .run)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between status lines")
    parser.add_argument("--no-demo", action="store_true", help="do not start the demo Prometheus")
    parser.add_argument("--archive", default="./archive", help="archive path: local dir, gs:// or s3:// (./archive)")
    parser.add_argument("--window-size", type=int, default=10, help="pipeline window in seconds (default 10)")
    parser.add_argument("--metrics-port", type=int, default=9202,
                        help="the pipeline's /metrics, /-/healthy and /-/ready port (default 9202)")
    parser.add_argument("--remote-write-url", action="append", default=[],
                        help="also forward every sample to this remote-write URL (repeatable or comma-separated)")
    args = parser.parse_args()

    work = Path(args.work_dir).resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    topic = f"projects/{args.project}/topics/{args.topic}"
    subscription = f"projects/{args.project}/subscriptions/{args.subscription}"
    started: list[services.Service] = []
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for port, what in ((args.port, "receiver (PORT=)"), (args.pubsub_port, "Pub/Sub emulator (PUBSUB_PORT=)"),
                           (args.metrics_port, "pipeline's metrics (METRICS_PORT=)")):
            if services.port_in_use(port):
                raise services.ServiceError(f"port {port} for the {what} is already in use; pick another")
        emulator, host = services.start_pubsub_emulator(work, args.pubsub_port)
        started.append(emulator)
        services.create_topic_and_subscription(host, topic, subscription)
        print(f"Pub/Sub emulator on {host}: topic {topic}, subscription {subscription}")
        for sink in sink_config.from_flags(args.remote_write_url):  # before any data, so the sinks get it all
            services.create_subscription(host, topic, sink.subscription_for(subscription))
            print(f"sink {sink.name}: forwarding to {sink.url}")
        receiver, url = services.start_receiver(work, host, topic, port=args.port)
        started.append(receiver)
        print(f"receiver on {url}/api/v1/write (metrics {url}/metrics)")
        demo = not args.no_demo and all(shutil.which(b) for b in ("prometheus", "prometheus-node-exporter"))
        if demo:
            node, node_addr = services.start_node_exporter(work)
            started.append(node)
            prom_port = services.free_port()
            config = (f"global: {{scrape_interval: 5s}}\nscrape_configs:\n"
                      f"  - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{prom_port}']}}]\n"
                      f"  - job_name: node\n    static_configs: [{{targets: ['{node_addr}']}}]\n"
                      f"remote_write:\n  - url: {url}/api/v1/write\n")
            prometheus, prom_url = services.start_prometheus(work, config, port=prom_port)
            started.append(prometheus)
            print(f"demo Prometheus on {prom_url} scrapes itself and node_exporter, remote-writing to the receiver")
        else:
            print("Prometheus/node_exporter not installed (apt-get install prometheus prometheus-node-exporter);"
                  " point your own Prometheus at the receiver with:\n"
                  + REMOTE_WRITE_SNIPPET.format(host="127.0.0.1", port=args.port))
        pipeline = services.Service("pipeline", [sys.executable, "-m", "pipeline", "--runner=DirectRunner",
                                                 f"--input_subscription={subscription}",
                                                 f"--archive_path={args.archive}",
                                                 f"--window_size={args.window_size}",
                                                 f"--metrics_port={args.metrics_port}",
                                                 *(f"--remote_write_url={u}" for u in args.remote_write_url)],
                                    work, env={"PUBSUB_EMULATOR_HOST": host}, cwd=services.ROOT)
        started.append(pipeline)
        pipeline_url = f"http://127.0.0.1:{args.metrics_port}"
        print(f"pipeline (local runner) archiving to {args.archive} every {args.window_size}s "
              f"(metrics {pipeline_url}/metrics)")
        print(f"logs in {work}; Ctrl-C stops everything.")
        while not stopping:
            deadline = time.monotonic() + args.interval
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.2)
            for service in started:
                if not service.alive():
                    raise services.ServiceError(f"{service.name} exited; log:\n{service.log_tail()}")
            if not stopping:
                print(time.strftime("%H:%M:%S"), status_line(url), "|", pipeline_status(pipeline_url),
                      flush=True)
        return 0
    except (services.ServiceError, sink_config.SinkConfigError) as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    finally:
        for service in reversed(started):
            service.stop()
        if started:
            print("stopped: " + ", ".join(s.name for s in reversed(started)))


if __name__ == "__main__":
    sys.exit(main())
