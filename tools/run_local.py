"""`make run`: the embedded default on one machine.

Starts the Pub/Sub emulator (topic + subscription), the receiver under gunicorn, the pipeline (local
runner) and, when Debian's prometheus and prometheus-node-exporter are installed, a demo Prometheus
that scrapes itself, node_exporter, the receiver and the pipeline, and remote-writes to the receiver
(so the queries of templates/grafana-dashboard.json answer there). With --demo-sink it also starts a
local VictoriaMetrics and forwards every sample to it. Prints status lines from the receiver's and
the pipeline's own /metrics every few seconds, and the totals after Ctrl-C, which stops everything
it started.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tools import services
from transforms.core.archive.format import DEFAULT_FORMAT, FORMATS
from transforms.core.flags import respell
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


def counted(value: float, noun: str) -> str:
    """'1 request', '2 requests', '12,000 samples'."""
    return f"{value:,.0f} {noun}{'' if round(value) == 1 else 's'}"


def status_line(receiver_url: str) -> str:
    samples = scrape(receiver_url)
    if isinstance(samples, str):
        return f"receiver: {samples}"
    rejected = sum(total(samples, "receiver_requests_total", code=str(c)) for c in (400, 401, 413, 415))
    unavailable = total(samples, "receiver_requests_total", code="503")
    return (f"receiver: {counted(total(samples, 'receiver_samples_accepted_total'), 'sample')} in "
            f"{counted(total(samples, 'receiver_requests_total', code='204'), 'request')}, "
            f"{total(samples, 'receiver_published_messages_total'):,.0f} published, "
            f"{rejected:,.0f} rejected (4xx), {unavailable:,.0f} unavailable (503)")


def pipeline_status(pipeline_url: str) -> list[str]:
    """The pipeline's own running totals, from its /metrics: one line (under 120 characters) with one sink or
    none, one more per sink with several."""
    samples = scrape(pipeline_url)
    if isinstance(samples, str):
        return [f"pipeline: {samples}"]
    backlog = max((v for n, _, v in samples if n == "pipeline_subscription_oldest_unacked_message_age_seconds"),
                  default=0.0)
    archive = (f"pipeline: archived {counted(total(samples, 'pipeline_archive_samples_total'), 'sample')} in "
               f"{counted(total(samples, 'pipeline_archive_files_total'), 'file')}, "
               f"{total(samples, 'pipeline_archive_dead_letters_total'):,.0f} dead-lettered, backlog {backlog:.0f}s")
    names = sorted({labels["sink"] for n, labels, _ in samples if n == "pipeline_sink_samples_sent_total"})

    def forwarded(name: str) -> str:
        return (f"{total(samples, 'pipeline_sink_samples_sent_total', sink=name):,.0f} forwarded, "
                f"{total(samples, 'pipeline_sink_samples_dead_lettered_total', sink=name):,.0f} refused")

    if len(names) == 1:  # named once at start ("sink NAME: forwarding to URL"), so the line stays short
        return [f"{archive} | {forwarded(names[0])}"]
    return [archive, *(f"  sink {name}: {forwarded(name)}" for name in names)]


def print_status(receiver_url: str, pipeline_url: str, prefix: str) -> None:
    for line in [status_line(receiver_url), *pipeline_status(pipeline_url)]:
        print(prefix, line, flush=True)


def drain(started: list[services.Service], receiver_url: str, pipeline_url: str, timeout: float,
          skipped: Callable[[], bool]) -> None:
    """Stop the demo senders, then give the pipeline a few windows to archive and forward what the receiver
    accepted, so the totals add up."""
    for service in [s for s in started if s.name in ("prometheus", "node-exporter")]:
        service.stop()
    print(f"draining: waiting up to {timeout:.0f}s for the pipeline to archive what was accepted "
          "(Ctrl-C again to skip)", flush=True)

    def drained() -> bool:
        received, archived = scrape(receiver_url), scrape(pipeline_url)
        if isinstance(received, str) or isinstance(archived, str):
            return True  # nothing more to learn: the totals will say which page is missing
        accepted = total(received, "receiver_samples_accepted_total")
        sinks = {labels["sink"] for n, labels, _ in archived if n == "pipeline_sink_samples_sent_total"}
        return total(archived, "pipeline_archive_samples_total") >= accepted and all(
            total(archived, "pipeline_sink_samples_sent_total", sink=name)
            + total(archived, "pipeline_sink_samples_dead_lettered_total", sink=name) >= accepted for name in sinks)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not skipped() and not drained():
        time.sleep(0.5)


def parse_args(argv: list[str]) -> argparse.Namespace:
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
    parser.add_argument("--archive-format", default=DEFAULT_FORMAT, choices=sorted(FORMATS),
                        help=f"archive file format (default {DEFAULT_FORMAT})")
    parser.add_argument("--window-size", type=int, default=10, help="pipeline window in seconds (default 10)")
    parser.add_argument("--metrics-port", type=int, default=9202,
                        help="the pipeline's /metrics, /-/healthy and /-/ready port (default 9202)")
    parser.add_argument("--remote-write-url", action="append", default=[],
                        help="also forward every sample to this remote-write URL (repeatable or comma-separated)")
    parser.add_argument("--demo-sink", action="store_true",
                        help="start a local VictoriaMetrics (data under WORK_DIR) and forward every sample to it")
    parser.add_argument("--demo-sink-port", type=int, default=8428, help="its port (default 8428)")
    # fixed ports, so the demo's `instance` labels are the same run after run (and so are the archived series)
    parser.add_argument("--node-exporter-port", type=int, default=9100, help="node_exporter's port (default 9100)")
    parser.add_argument("--prometheus-port", type=int, default=9090, help="the demo Prometheus' port (default 9090)")
    known = {option[2:] for action in parser._actions for option in action.option_strings if option.startswith("--")}
    return parser.parse_args(respell(argv, "-", known))


def check_ports(args: argparse.Namespace, demo: bool) -> None:
    """Every fixed port up front, each with the make variable that moves it: one line, before anything starts."""
    wanted = [(args.port, "receiver", "PORT"), (args.pubsub_port, "Pub/Sub emulator", "PUBSUB_PORT"),
              (args.metrics_port, "pipeline's metrics", "METRICS_PORT")]
    if demo:
        wanted += [(args.node_exporter_port, "node_exporter", "NODE_EXPORTER_PORT"),
                   (args.prometheus_port, "demo Prometheus", "PROMETHEUS_PORT")]
    if args.demo_sink:
        wanted.append((args.demo_sink_port, "demo VictoriaMetrics", "DEMO_SINK_PORT"))
    for port, what, variable in wanted:
        if services.port_in_use(port):
            raise services.ServiceError(f"port {port} for the {what} is already in use; "
                                        f"stop what holds it or pick another: make run {variable}=...")


def prometheus_config(prom_port: int, node_addr: str, receiver_url: str, pipeline_port: int) -> str:
    """The demo Prometheus scrapes itself, node_exporter, the receiver and the pipeline (the dashboard's
    metrics), and remote-writes everything to the receiver."""
    targets = {"prometheus": f"127.0.0.1:{prom_port}", "node": node_addr,
               "receiver": receiver_url.removeprefix("http://"), "pipeline": f"127.0.0.1:{pipeline_port}"}
    jobs = "".join(f"  - job_name: {job}\n    static_configs: [{{targets: ['{target}']}}]\n"
                   for job, target in targets.items())
    return (f"global: {{scrape_interval: 5s}}\nscrape_configs:\n{jobs}"
            f"remote_write:\n  - url: {receiver_url}/api/v1/write\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    work = Path(args.work_dir).resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    topic = f"projects/{args.project}/topics/{args.topic}"
    subscription = f"projects/{args.project}/subscriptions/{args.subscription}"
    demo = not args.no_demo and all(shutil.which(b) for b in ("prometheus", "prometheus-node-exporter"))
    started: list[services.Service] = []
    interrupts = 0  # the first Ctrl-C drains what was accepted into the archive, a second one skips that

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal interrupts
        interrupts += 1

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    url = pipeline_url = ""
    try:
        check_ports(args, demo)
        sink_urls = list(args.remote_write_url)
        if args.demo_sink:
            victoria, victoria_url = services.start_victoria_metrics(work, port=args.demo_sink_port,
                                                                     data_dir=str(work / "victoria-metrics"))
            started.append(victoria)
            sink_urls.append(f"{victoria_url}/api/v1/write")
            print(f"demo sink: VictoriaMetrics on {victoria_url} (UI {victoria_url}/vmui); try, after a minute:\n"
                  f"  curl -s '{victoria_url}/api/v1/query?query=count(up)%20by%20(job)'")
        emulator, host = services.start_pubsub_emulator(work, args.pubsub_port)
        started.append(emulator)
        services.create_topic_and_subscription(host, topic, subscription)
        print(f"Pub/Sub emulator on {host}: topic {topic}, subscription {subscription}")
        for sink in sink_config.from_flags(sink_urls):  # before any data, so the sinks get it all
            services.create_subscription(host, topic, sink.subscription_for(subscription))
            print(f"sink {sink.name}: forwarding to {sink.url}")
        receiver, url = services.start_receiver(work, host, topic, port=args.port)
        started.append(receiver)
        print(f"receiver on {url}/api/v1/write (metrics {url}/metrics)")
        if demo:
            node, node_addr = services.start_node_exporter(work, port=args.node_exporter_port)
            started.append(node)
            config = prometheus_config(args.prometheus_port, node_addr, url, args.metrics_port)
            prometheus, prom_url = services.start_prometheus(work, config, port=args.prometheus_port)
            started.append(prometheus)
            print(f"demo Prometheus on {prom_url} scrapes itself, node_exporter ({node_addr}), the receiver and "
                  "the pipeline, remote-writing to the receiver; the dashboard's queries answer there, e.g.\n"
                  f"  curl -s '{prom_url}/api/v1/query?query=sum(rate(receiver_samples_accepted_total[1m]))'")
        else:
            print("Prometheus/node_exporter not installed (apt-get install prometheus prometheus-node-exporter);"
                  " point your own Prometheus at the receiver with:\n"
                  + REMOTE_WRITE_SNIPPET.format(host="127.0.0.1", port=args.port))
        pipeline = services.Service("pipeline", [sys.executable, "-m", "pipeline", "--runner=DirectRunner",
                                                 f"--input_subscription={subscription}",
                                                 f"--archive_path={args.archive}",
                                                 f"--archive_format={args.archive_format}",
                                                 f"--window_size={args.window_size}",
                                                 f"--metrics_port={args.metrics_port}",
                                                 *(f"--remote_write_url={u}" for u in sink_urls)],
                                    work, env={"PUBSUB_EMULATOR_HOST": host}, cwd=services.ROOT)
        started.append(pipeline)
        pipeline_url = f"http://127.0.0.1:{args.metrics_port}"
        print(f"pipeline (local runner) archiving {args.archive_format} to {args.archive} every {args.window_size}s "
              f"(metrics {pipeline_url}/metrics)")
        print(f"logs in {work}; Ctrl-C stops everything.")
        while not interrupts:
            deadline = time.monotonic() + args.interval
            while not interrupts and time.monotonic() < deadline:
                time.sleep(0.2)
            for service in started:
                if not service.alive():
                    raise services.ServiceError(f"{service.name} exited; log:\n{service.log_tail()}")
            if not interrupts:
                print_status(url, pipeline_url, time.strftime("%H:%M:%S"))
        drain(started, url, pipeline_url, args.window_size * 3 + 10, lambda: interrupts > 1)
        print_status(url, pipeline_url, "totals:")
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
