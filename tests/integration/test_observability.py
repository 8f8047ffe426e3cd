"""The pipeline observable the Prometheus way, end to end with real processes: receiver -> Pub/Sub
-> `python -m pipeline` (archive + a VictoriaMetrics sink). Its /metrics, /-/healthy and /-/ready;
`make run`'s status line read from both /metrics pages; and the Grafana dashboard queries only
metrics that the receiver and the pipeline really export."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tools import services
from tools.archive import archive_files
from tools.run_local import pipeline_status, scrape, status_line, total
from transforms.core.protocol import CONTENT_TYPE_V1, HEADER_VERSION, VERSION_HEADER_V1
from transforms.core.sink import config
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "templates" / "grafana-dashboard.json"
REQUESTS, SERIES = 12, 50


@pytest.fixture(scope="module")
def stack(pubsub_emulator, log_dir, tmp_path_factory) -> Iterator[dict[str, str]]:
    work = tmp_path_factory.mktemp("observability")
    topic, subscription = "projects/test-project/topics/observed", "projects/test-project/subscriptions/observed"
    services.create_topic_and_subscription(pubsub_emulator, topic, subscription)
    victoria, vm_url = services.start_victoria_metrics(log_dir, name="vm-observed")
    receiver, receiver_url = services.start_receiver(log_dir, pubsub_emulator, topic, name="receiver-observed")
    port = services.free_port()
    pipeline = services.Service("pipeline-observed", [
        sys.executable, "-m", "pipeline", "--runner=DirectRunner", f"--input_subscription={subscription}",
        f"--archive_path={work / 'archive'}", "--window_size=2", f"--metrics_port={port}",
        f"--remote_write_url={vm_url}/api/v1/write", "--remote_write_config=" + str(sinks_file(work, vm_url))],
        log_dir, env={"PUBSUB_EMULATOR_HOST": pubsub_emulator}, cwd=ROOT)
    pipeline_url = f"http://127.0.0.1:{port}"
    with services.stopping(victoria, receiver, pipeline):  # stopped in reverse: the pipeline first
        pipeline.wait_ready(lambda: services.http_get(f"{pipeline_url}/-/healthy")[0] == 200, timeout=60)
        yield {"receiver": receiver_url, "pipeline": pipeline_url, "archive": str(work / "archive"),
               "sink": config.from_flags([f"{vm_url}/api/v1/write"])[0].name}


def sinks_file(work: Path, vm_url: str) -> Path:
    """A second sink on the same store whose rules drop one series, so the drop counter moves."""
    path = work / "sinks.json"
    path.write_text(json.dumps({"remote_write": [{"url": f"{vm_url}/api/v1/write", "name": "vm-rules",
                                                  "write_relabel_configs": [
                                                      {"action": "drop", "source_labels": ["i"], "regex": "0"}]}]}))
    return path


def send(receiver_url: str) -> None:
    for r in range(REQUESTS):
        request = build_v1([Series({"__name__": "observed", "i": str(i)}, [(1_795_597_200_000 + r, float(i))])
                            for i in range(SERIES)])
        answer = requests.post(f"{receiver_url}/api/v1/write", data=codec.encode(request), timeout=30, headers={
            "Content-Type": CONTENT_TYPE_V1, "Content-Encoding": "snappy", HEADER_VERSION: VERSION_HEADER_V1})
        assert answer.status_code == 204, answer.text


def metrics(url: str) -> list[tuple[str, dict[str, str], float]]:
    samples = scrape(url)
    assert not isinstance(samples, str), samples
    return samples


def test_metrics_readiness_and_the_status_line(stack):
    pipeline = stack["pipeline"]
    services.wait_until(lambda: services.http_get(f"{pipeline}/-/ready")[0] == 200, 60, "the pipeline to be ready")
    assert services.http_get(f"{pipeline}/-/healthy")[0] == 200
    send(stack["receiver"])
    expected = REQUESTS * SERIES

    def delivered() -> bool:
        found = metrics(pipeline)
        return (total(found, "pipeline_archive_samples_total") == expected
                and total(found, "pipeline_sink_samples_sent_total", sink=stack["sink"]) == expected
                and total(found, "pipeline_sink_samples_sent_total", sink="vm-rules") == expected - REQUESTS)
    services.wait_until(delivered, 90, "every sample archived and sent to both sinks", interval=0.5)
    found = metrics(pipeline)
    assert total(found, "pipeline_archive_files_total") == len(archive_files(stack["archive"])) > 0
    assert total(found, "pipeline_archive_lines_total") == expected
    assert total(found, "pipeline_sink_samples_dropped_by_rules_total", sink="vm-rules") == REQUESTS
    assert total(found, "pipeline_sink_samples_dead_lettered_total") == 0
    assert total(found, "pipeline_pull_failures_total") == 0
    runs = total(found, "pipeline_archive_runs_total")
    assert runs >= 1 and total(found, "pipeline_bounded_run_duration_seconds_count") == runs
    requests_sent = total(found, "pipeline_sink_requests_total")
    assert requests_sent >= 2 and total(found, "pipeline_sink_request_duration_seconds_count") == requests_sent
    consumers = {labels["consumer"] for name, labels, _ in found
                 if name == "pipeline_subscription_oldest_unacked_message_age_seconds"}
    assert consumers == {"archive", "vm-rules", stack["sink"]}
    receiver_line, pipeline_lines = status_line(stack["receiver"]), pipeline_status(pipeline)
    assert f"receiver: {expected:,} samples in {REQUESTS} requests" in receiver_line, receiver_line
    line = " | ".join(pipeline_lines)
    assert f"archived {expected:,} samples" in line and f"sink vm-rules: {expected - REQUESTS:,} forwarded" in line
    assert all(len(x) <= 120 for x in [receiver_line, *pipeline_lines]), [receiver_line, *pipeline_lines]


def exported_names(url: str) -> set[str]:
    """Family and sample names (histograms' _bucket/_sum/_count too) of a real /metrics page."""
    return {name for name, _, _ in metrics(url)}


def test_the_dashboard_queries_only_metrics_we_export(stack):
    services.wait_until(lambda: total(metrics(stack["pipeline"]), "pipeline_sink_requests_total") > 0, 90,
                        "the pipeline to have sent something")  # every family then has samples
    exported = exported_names(stack["receiver"]) | exported_names(stack["pipeline"])
    dashboard = json.loads(DASHBOARD.read_text())
    queried = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", target["expr"])  # matchers, ranges, strings
            ours = set(re.findall(r"\b(?:receiver|pipeline)_[a-zA-Z0-9_]+", expr))
            assert ours, f"{panel['title']}: {target['expr']} queries none of our metrics"
            queried |= ours
    assert queried - exported == set(), f"the dashboard queries metrics nobody exports; we export {sorted(exported)}"
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("ingest", "4xx", "503", "publish latency", "archive", "backlog", "sink", "retries", "dead letters"):
        assert topic in titles, topic
