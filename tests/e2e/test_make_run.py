"""`make run`'s orchestrator: everything comes up, status lines flow, Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import requests

from tools import services


def children_of(pid: int) -> set[int]:
    """Every descendant process of pid, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def forwarded(line: str) -> int:
    match = re.search(r"\| ([\d,]+) forwarded", line)
    return int(match.group(1).replace(",", "")) if match else 0


DASHBOARD = services.ROOT / "templates" / "grafana-dashboard.json"


def dashboard_queries(*metrics: str) -> list[str]:
    """The dashboard's own expressions for these metrics, with Grafana's $__rate_interval as 1m."""
    exprs = [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]]
    return [next(e for e in exprs if metric in e).replace("$__rate_interval", "1m") for metric in metrics]


def test_make_run_shows_every_feature_and_ctrl_c_stops_everything(tmp_path):
    """Parquet, the demo VictoriaMetrics sink, the dashboard's queries answering in the demo Prometheus, fixed
    node_exporter/Prometheus ports; status lines count what the sink accepted; Ctrl-C prints the totals."""
    port, pubsub_port, metrics_port = services.free_port(), services.free_port(), services.free_port()
    vm_port, node_port, prom_port = services.free_port(), services.free_port(), services.free_port()
    archive = tmp_path / "archive"
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.run_local", "--port", str(port), "--pubsub-port", str(pubsub_port),
         "--archive", str(archive), "--archive-format", "parquet", "--window-size", "3", "--interval", "2",
         "--work-dir", str(tmp_path / "run"), "--demo-sink", "--demo-sink-port", str(vm_port),
         "--node-exporter-port", str(node_port), "--prometheus_port", str(prom_port),  # either spelling
         "--metrics-port", str(metrics_port)],
        cwd=services.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    descendants: set[int] = set()
    victoria_url, prom_url = f"http://127.0.0.1:{vm_port}", f"http://127.0.0.1:{prom_port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            descendants |= children_of(process.pid)
            if "archived" in line and " 0 samples in 0 files" not in line and forwarded(line) > 0:
                break
        output = "".join(lines)
        assert f"demo Prometheus on {prom_url}" in output, output
        assert f"demo sink: VictoriaMetrics on {victoria_url}" in output and "/api/v1/query?query=" in output
        assert f"receiver on http://127.0.0.1:{port}" in output and "archiving parquet" in output
        status = [x for x in lines if re.match(r"\d\d:\d\d:\d\d (receiver|pipeline):", x)]
        assert status and all(len(x.rstrip("\n")) <= 120 for x in status), status
        assert forwarded(lines[-1]) > 0 and " 0 samples in 0 files" not in lines[-1], output
        assert list(archive.rglob("part-*.parquet")), "make run archives in the format asked for"

        def in_victoria() -> bool:
            requests.get(f"{victoria_url}/internal/force_flush", timeout=30)
            return f'"instance":"127.0.0.1:{node_port}"' in requests.get(
                f"{victoria_url}/api/v1/export", params={"match[]": '{job="node",__name__="node_load1"}'},
                timeout=30).text
        services.wait_until(in_victoria, 30, "node_exporter's samples in VictoriaMetrics, through the pipeline")

        def answers(query: str) -> bool:
            found = requests.get(f"{prom_url}/api/v1/query", params={"query": query}, timeout=10).json()
            return bool(found["data"]["result"])
        for query in dashboard_queries("receiver_samples_accepted_total", "pipeline_archive_samples_total",
                                       "pipeline_subscription_oldest_unacked_message_age_seconds"):
            services.wait_until(lambda q=query: answers(q), 60, f"the demo Prometheus to answer {query}", interval=1)
        assert len(descendants) >= 5  # emulator, receiver (+ workers), node_exporter, Prometheus, VM, pipeline
        process.send_signal(signal.SIGINT)
        assert process.wait(90) == 0
    finally:
        if process.poll() is None:
            process.kill()
    rest = process.stdout.read()
    received = re.search(r"^totals: receiver: ([\d,]+) samples in [\d,]+ requests?,", rest, re.M)
    archived = re.search(r"^totals: pipeline: archived ([\d,]+) samples in [\d,]+ files?, .*\| ([\d,]+) forwarded",
                         rest, re.M)
    assert received and archived, rest
    # Ctrl-C stops the demo senders, then waits for the pipeline: the totals add up
    assert received.group(1) == archived.group(1) == archived.group(2), rest
    assert "stopped: pipeline, prometheus, node-exporter, receiver, pubsub-emulator, victoria-metrics" in rest
    alive = [pid for pid in descendants if os.path.exists(f"/proc/{pid}") and
             open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    assert alive == [], f"left running: {alive}"


def test_missing_emulator_message_names_the_packages(tmp_path, monkeypatch, capsys):
    from tools import run_local

    monkeypatch.setattr(services, "PUBSUB_EMULATOR", tmp_path / "no-emulator")
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's own Ctrl-C handler
    monkeypatch.setattr(sys, "argv", ["make run", "--port", str(services.free_port()), "--pubsub-port",
                                      str(services.free_port()), "--work-dir", str(tmp_path / "run"),
                                      "--metrics-port", str(services.free_port()), "--no-demo"])
    assert run_local.main() == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gcloud components install pubsub-emulator" in err[0]
    assert "google-cloud-cli-pubsub-emulator" in err[0] and "Traceback" not in err[0]


def test_make_pubsub_creates_the_topic_and_subscription_and_prints_how_to_use_them(tmp_path):
    port = services.free_port()
    process = subprocess.Popen([sys.executable, "-m", "tools.pubsub_local", "--port", str(port)], cwd=services.ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (lines and lines[-1].startswith("Ctrl-C")):
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
        output = "".join(lines)
        assert f"  export PUBSUB_EMULATOR_HOST=127.0.0.1:{port}\n" in output, output
        assert " -m receiver --topic=projects/local-project/topics/remote-write\n" in output
        assert " --input_subscription=projects/local-project/subscriptions/remote-write-pipeline " in output
        found = requests.get(f"http://127.0.0.1:{port}/v1/projects/local-project/subscriptions/remote-write-pipeline",
                             timeout=10).json()
        assert found["topic"] == "projects/local-project/topics/remote-write", found
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "stopped: pubsub-emulator" in process.stdout.read()
    assert not services.port_in_use(port), "Ctrl-C stops the emulator"


def test_make_pubsub_on_a_taken_port_is_one_line(capsys, monkeypatch):
    from tools import pubsub_local

    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's own Ctrl-C handler
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert pubsub_local.main(["--port", str(port)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"make pubsub: port {port} is already in use (another emulator, or make run?); stop it or pick "
                   "another: make pubsub PUBSUB_PORT=..."]
