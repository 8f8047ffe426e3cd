"""`make run`'s orchestrator: everything comes up, status lines flow, Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
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
    match = re.search(r"forwarded samples: \S+ ([\d,]+)", line)
    return int(match.group(1).replace(",", "")) if match else 0


def test_make_run_flows_and_ctrl_c_stops_everything(tmp_path, log_dir):
    """Also with REMOTE_WRITE_URL= (here VictoriaMetrics): the status line counts what the sink accepted."""
    port, pubsub_port = services.free_port(), services.free_port()
    victoria, victoria_url = services.start_victoria_metrics(log_dir, name="vm-make-run")
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.run_local", "--port", str(port), "--pubsub-port", str(pubsub_port),
         "--archive", str(tmp_path / "archive"), "--window-size", "3", "--interval", "2",
         "--work-dir", str(tmp_path / "run"), "--remote-write-url", f"{victoria_url}/api/v1/write",
         "--metrics-port", str(services.free_port())],
        cwd=services.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    descendants: set[int] = set()
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
        assert "demo Prometheus" in output, output
        assert f"receiver on http://127.0.0.1:{port}" in output
        assert "| archived" in output and " 0 samples in 0 files" not in output.splitlines()[-1], output
        assert forwarded(output.splitlines()[-1]) > 0, output
        def in_victoria() -> bool:
            requests.get(f"{victoria_url}/internal/force_flush", timeout=30)
            return "node_" in requests.get(f"{victoria_url}/api/v1/export", params={"match[]": '{job="node"}'},
                                           timeout=30).text
        services.wait_until(in_victoria, 30, "node_exporter's samples in VictoriaMetrics, through the pipeline")
        assert len(descendants) >= 4  # emulator, receiver (+ workers), node_exporter, Prometheus, pipeline
        process.send_signal(signal.SIGINT)
        assert process.wait(90) == 0
    finally:
        if process.poll() is None:
            process.kill()
        victoria.stop()
    rest = process.stdout.read()
    assert "stopped: pipeline, prometheus, node-exporter, receiver, pubsub-emulator" in rest
    alive = [pid for pid in descendants if os.path.exists(f"/proc/{pid}") and
             open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    assert alive == [], f"left running: {alive}"


def test_missing_emulator_message_names_the_packages(tmp_path, monkeypatch, capsys):
    from tools import run_local

    monkeypatch.setattr(services, "PUBSUB_EMULATOR", tmp_path / "no-emulator")
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's own Ctrl-C handler
    monkeypatch.setattr(sys, "argv", ["make run", "--port", str(services.free_port()), "--pubsub-port",
                                      str(services.free_port()), "--work-dir", str(tmp_path / "run")])
    assert run_local.main() == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gcloud components install pubsub-emulator" in err[0]
    assert "google-cloud-cli-pubsub-emulator" in err[0] and "Traceback" not in err[0]
