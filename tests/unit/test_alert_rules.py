"""templates/alerts.yml: valid Prometheus rules (promtool), querying only metrics the code defines."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import yaml
from prometheus_client import CollectorRegistry

from pipeline.metrics import PipelineCollector
from receiver.metrics import ReceiverMetrics
from transforms.core.buckets import Buckets
from transforms.core.sink.stats import SinkStats
from transforms.io.pubsub import PullStats

ALERTS = Path(__file__).resolve().parents[2] / "templates" / "alerts.yml"
OURS = re.compile(r"\b(?:receiver|pipeline)_[a-zA-Z0-9_]+")
RETENTION_SECONDS = 7 * 86_400  # Pub/Sub's default message retention


def sample_names(registry: CollectorRegistry) -> set[str]:
    """Every name a scrape can show: counters' _total, histograms' _bucket/_sum/_count, gauges as they are."""
    names = set()
    for family in registry.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    return names


def defined_names() -> set[str]:
    receiver = ReceiverMetrics().registry
    # the collector as the launcher builds it, over loops that have not run yet: one sink, nothing counted
    archive = SimpleNamespace(totals={}, run_seconds=Buckets([1.0]), subscription="projects/p/subscriptions/s",
                              pull_stats=PullStats(), lease=None)
    sink = SimpleNamespace(sink=SimpleNamespace(name="vm"), subscription="projects/p/subscriptions/s-vm",
                           pull_stats=PullStats(), lease=None, forwarder=SimpleNamespace(stats=SinkStats()))
    pipeline = CollectorRegistry()
    pipeline.register(PipelineCollector(archive, [sink]))  # type: ignore[arg-type]
    return sample_names(receiver) | sample_names(pipeline)


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules():
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: apt-get install prometheus (Debian ships promtool with it)"
    checked = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_every_metric_in_the_rules_is_one_the_code_defines():
    defined = defined_names()
    assert "pipeline_subscription_oldest_unacked_message_age_seconds" in defined  # the helper sees the collector
    used = set()
    for rule in rules():
        expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", rule["expr"])  # matchers, ranges, strings
        names = set(OURS.findall(expr))
        assert names, f"{rule['alert']} queries none of our metrics: {rule['expr']}"
        used |= names
    assert used - defined == set(), f"rules query metrics the code does not define; it defines {sorted(defined)}"


def test_backlog_alerts_warn_at_half_and_page_at_four_fifths_of_the_retention():
    thresholds = {}
    for rule in rules():
        if "oldest_unacked_message_age" in rule["expr"]:
            thresholds[rule["labels"]["severity"]] = float(rule["expr"].rsplit(">", 1)[1])
    assert thresholds == {"warning": RETENTION_SECONDS * 0.5, "page": RETENTION_SECONDS * 0.8}


def test_the_alerts_cover_what_an_operator_must_hear_about():
    exprs = " ".join(rule["expr"] for rule in rules())
    for needed in ("pipeline_archive_dead_letters_total", "pipeline_sink_samples_dead_lettered_total",
                   "pipeline_sink_samples_failed_total", 'code=~"4.."', 'code="503"', 'code=~"5.."'):
        assert needed in exprs, needed
