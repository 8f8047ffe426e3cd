"""`make run`'s status lines: plurals, one line of at most 120 characters with a sink, one line per sink when
several do not fit; and the ports it checks before starting anything."""

from __future__ import annotations

import socket

import pytest

from tools import run_local, services

SINK = "rw-127-0-0-1-8428-api-v1-write"  # the name the demo VictoriaMetrics sink gets


def receiver_page(samples: float, requests: float) -> list:
    return [("receiver_samples_accepted_total", {"protocol": "1.0"}, samples),
            ("receiver_requests_total", {"code": "204", "protocol": "1.0"}, requests),
            ("receiver_requests_total", {"code": "400", "protocol": "1.0"}, 3.0),
            ("receiver_published_messages_total", {}, requests)]


def pipeline_page(samples: float, files: float, sinks: dict[str, float]) -> list:
    page = [("pipeline_archive_samples_total", {}, samples), ("pipeline_archive_files_total", {}, files),
            ("pipeline_archive_dead_letters_total", {}, 0.0),
            ("pipeline_subscription_oldest_unacked_message_age_seconds", {"consumer": "archive"}, 4.2)]
    for name, sent in sinks.items():
        page += [("pipeline_sink_samples_sent_total", {"sink": name}, sent),
                 ("pipeline_sink_samples_dead_lettered_total", {"sink": name}, 7.0)]
    return page


def test_counts_read_as_english() -> None:
    assert run_local.counted(1, "request") == "1 request"
    assert run_local.counted(2, "request") == "2 requests"
    assert run_local.counted(0, "file") == "0 files"
    assert run_local.counted(12_000, "sample") == "12,000 samples"


def test_the_receiver_line(monkeypatch) -> None:
    monkeypatch.setattr(run_local, "scrape", lambda url: receiver_page(500, 1))
    assert run_local.status_line("http://r") == ("receiver: 500 samples in 1 request, 1 published, "
                                                 "3 rejected (4xx), 0 unavailable (503)")


def test_one_sink_fits_one_line_of_at_most_120_characters(monkeypatch) -> None:
    monkeypatch.setattr(run_local, "scrape", lambda url: pipeline_page(1_234_567, 1, {SINK: 1_234_000}))
    lines = run_local.pipeline_status("http://p")
    assert lines == ["pipeline: archived 1,234,567 samples in 1 file, 0 dead-lettered, backlog 4s | "
                     "1,234,000 forwarded, 7 refused"]
    assert len("12:00:00 " + lines[0]) <= 120
    monkeypatch.setattr(run_local, "scrape", lambda url: receiver_page(123_456_789, 246_913))
    assert len("12:00:00 " + run_local.status_line("http://r")) <= 120


def test_several_sinks_go_one_per_line(monkeypatch) -> None:
    monkeypatch.setattr(run_local, "scrape", lambda url: pipeline_page(10, 2, {SINK: 10, "mimir": 9, "prom": 8}))
    lines = run_local.pipeline_status("http://p")
    assert lines[0] == "pipeline: archived 10 samples in 2 files, 0 dead-lettered, backlog 4s"
    assert lines[1:] == ["  sink mimir: 9 forwarded, 7 refused", "  sink prom: 8 forwarded, 7 refused",
                         f"  sink {SINK}: 10 forwarded, 7 refused"]


def test_an_unreachable_page_says_whose(monkeypatch) -> None:
    monkeypatch.setattr(run_local, "scrape", lambda url: f"{url}/metrics unreachable (refused)")
    assert run_local.pipeline_status("http://p") == ["pipeline: http://p/metrics unreachable (refused)"]


def test_a_taken_fixed_port_is_one_line_naming_the_variable(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(run_local.signal, "signal", lambda *args: None)  # keep pytest's own Ctrl-C handler
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        free = [str(services.free_port()) for _ in range(4)]
        code = run_local.main(["--port", free[0], "--pubsub_port", free[1], "--metrics-port", free[2],
                               "--demo-sink", "--demo-sink-port", free[3], "--node-exporter-port", str(port),
                               "--work-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    if not run_local.shutil.which("prometheus"):
        pytest.skip("no demo Prometheus installed: node_exporter's port is not needed")
    assert code == 1 and err == [f"make run: port {port} for the node_exporter is already in use; stop what holds "
                                 "it or pick another: make run NODE_EXPORTER_PORT=..."]
