"""Tenants from a label: each series goes under the tenant its label names (X-Scope-OrgID), requests split per
tenant, each series' samples in order; series without the label go to the fallback tenant; invalid values go
to dead letters with a reason, never to any tenant.

The forwarder runs with the production HTTP service against a capture sink (a threaded http.server) that
records each request's tenant header and body; both the columnar path (float-only messages) and the
protobuf path (messages carrying exemplars) are exercised, in 1.0 and 2.0."""

from __future__ import annotations

import base64
import json
from collections import defaultdict

import pytest

from tests.sink_helpers import Capture
from transforms.core.protocol import Protocol
from transforms.core.sink import config
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1, build_v2
from transforms.io.http_sink import HttpService
from transforms.io.sink_driver import Forwarder

BASE_MS = 1_764_900_000_000
INCOMING = "incoming-t"
VALID = {"team-a": 400, "team-b": 350, "Team_C.1": 150}  # tenant -> series count
NO_LABEL = 300
INVALID = {"bad team!": 40, "x" * 151: 30, "..": 20}  # not in the tenant charset, too long, a path segment

Labels = tuple[tuple[str, str], ...]


def all_series(step: int, exemplars: bool) -> list[Series]:
    """Every series once, with one sample at BASE_MS + step (the same label sets in every message)."""
    out = []
    groups = [*[(t, n) for t, n in VALID.items()], (None, NO_LABEL), *[(t, n) for t, n in INVALID.items()]]
    for g, (tenant, count) in enumerate(groups):
        for i in range(count):
            labels = {"__name__": "requests_total", "group": str(g), "index": str(i)}
            if tenant is not None:
                labels["team"] = tenant
            ex = [({"trace_id": f"t{i}"}, BASE_MS + step, 1.0)] if exemplars and i == 0 else []
            out.append(Series(labels, [(BASE_MS + step, float(step + i))], exemplars=ex))
    return out


def decode_series(protocol: Protocol, body: bytes) -> list[tuple[Labels, list[tuple[int, float]]]]:
    message = codec.decode(body, protocol, 1 << 26).message
    out = []
    for s in message.timeseries:
        if protocol is Protocol.V1:
            labels = tuple((lab.name, lab.value) for lab in s.labels)
        else:
            refs = list(s.labels_refs)
            labels = tuple((message.symbols[refs[i]], message.symbols[refs[i + 1]]) for i in range(0, len(refs), 2))
        out.append((labels, [(p.timestamp, p.value) for p in s.samples]))
    return out


def without(labels: Labels, name: str) -> Labels:
    return tuple((n, v) for n, v in labels if n != name)


@pytest.mark.parametrize("protocol,drop,fixed,exemplars", [
    ("1.0", True, "fixed-t", False), ("1.0", False, None, True),
    ("2.0", False, None, False), ("2.0", True, "fixed-t", True)])
def test_series_go_to_the_tenant_their_label_names(capture, protocol, drop, fixed, exemplars):
    entry = {"url": capture, "protocol": protocol, "tenant_label": "team", "tenant_label_drop": drop,
             "queue_config": {"shards": 3, "max_samples_per_send": 500}}
    if fixed:
        entry["tenant"] = fixed
    (sink,) = config.from_document(json.dumps({"remote_write": [entry]}))
    build = build_v1 if protocol == "1.0" else build_v2
    messages = []
    for step in (0, 15_000):  # two messages: each series' second sample comes in the second one
        request = build(all_series(step, exemplars))
        messages.append((codec.encode(request), codec.message_attributes(Protocol(protocol), INCOMING, "now",
                                                                         codec.count(request))))
    forwarder = Forwarder(sink, service=HttpService(sink))
    try:
        dead = forwarder.forward(messages)
    finally:
        forwarder.close()

    received: dict[str, dict[Labels, list[tuple[int, float]]]] = defaultdict(dict)  # tenant -> series -> samples
    for _, headers, body in Capture.seen:
        tenant = headers["X-Scope-OrgID"]
        for labels, samples in decode_series(codec.protocol_for_content_type(headers["Content-Type"]), body):
            received[tenant].setdefault(labels, []).extend(samples)
    fallback = fixed or INCOMING
    assert set(received) == {*VALID, fallback}
    sent = all_series(0, False)
    for series in sent:
        labels = tuple(sorted(series.labels.items()))
        tenant = series.labels.get("team")
        if tenant in INVALID:
            assert all(labels not in got and without(labels, "team") not in got for got in received.values())
            continue
        expected_labels = without(labels, "team") if drop else labels
        where = tenant or fallback
        i = int(series.labels["index"])
        # in order, exactly once, and nowhere else
        assert received[where].get(expected_labels) == [(BASE_MS, float(i)), (BASE_MS + 15_000, float(15_000 + i))]
        assert sum(expected_labels in got for got in received.values()) == 1
    assert {t: len(got) for t, got in received.items()} == {**VALID, fallback: NO_LABEL}

    letters = [json.loads(d) for d in dead]
    refused: dict[str, set[Labels]] = defaultdict(set)
    for letter in letters:
        value = next(v for v in INVALID if f"team={v!r} is not a valid tenant id" in letter["error"])
        for labels, _ in decode_series(Protocol.V1, base64.b64decode(letter["data_base64"])):
            assert dict(labels)["team"] == value  # the label is kept, so the record shows the tenant it named
            refused[value].add(labels)
        assert letter["attributes"]["tenant"] == INCOMING and letter["sink"] == sink.name
    assert {v: len(s) for v, s in refused.items()} == INVALID
    assert forwarder.stats.snapshot()["samples_dead_lettered"] == 2 * sum(INVALID.values())


def test_tenant_label_settings_are_checked():
    url = "http://127.0.0.1:9/api/v1/write"
    assert config.from_flags([url], tenant_label="team", tenant_label_drop=True)[0] == config.from_document(
        json.dumps({"remote_write": [{"url": url, "tenant_label": "team", "tenant_label_drop": True}]}))[0]
    for entry, error in (({"tenant_label": "te am"}, "not a label name"),
                         ({"tenant_label": "__name__"}, "not a label name"),
                         ({"tenant_label_drop": True}, "needs tenant_label"),
                         ({"tenant_label": "team", "tenant_label_drop": "yes"}, "expected true or false"),
                         ({"tenant_label": "team", "tenant_header": "drop"}, "cannot go with tenant_header")):
        with pytest.raises(config.SinkConfigError, match=error):
            config.from_document(json.dumps({"remote_write": [{"url": url, **entry}]}))


def test_the_streaming_graphs_sink_branch_routes_by_tenant_label(capture, tmp_path):
    """ForwardToSink (the Dataflow branch: shard, GroupIntoBatches per (tenant, shard), send) on Beam's local
    runner: the (tenant, shard) keys carry the label's tenant, and invalid values reach the dead-letter files."""
    import apache_beam as beam
    from apache_beam.io.gcp.pubsub import PubsubMessage

    from transforms.beam import ForwardToSink

    teams = ["team-a", "team-b", "", "bad team!"]  # "" = no label
    requests_ = [build_v1([Series({"__name__": "beam_tenant", "i": str(i), **({"team": teams[i % 4]}
                                                                              if teams[i % 4] else {})},
                                  [(BASE_MS + 1000 * (9 - r), float(r))]) for i in range(40)])
                 for r in range(10)]  # newest first: the sink must still send each series in time order
    messages = [PubsubMessage(codec.encode(r), codec.message_attributes(Protocol.V1, INCOMING, "now", codec.count(r)))
                for r in requests_]
    (sink,) = config.from_document(json.dumps({"remote_write": [{
        "url": capture, "tenant_label": "team", "tenant_label_drop": True, "queue_config": {"shards": 3}}]}))
    with beam.Pipeline(runner="DirectRunner") as p:
        _ = p | beam.Create(messages) | ForwardToSink(sink, str(tmp_path / "dead"))
    stamps: dict[str, dict[str, list[int]]] = defaultdict(dict)
    for _, headers, body in Capture.seen:
        for labels, samples in decode_series(Protocol.V1, body):
            assert "team" not in dict(labels)
            stamps[headers["X-Scope-OrgID"]].setdefault(dict(labels)["i"], []).extend(t for t, _ in samples)
    expected_order = sorted(BASE_MS + 1000 * (9 - r) for r in range(10))
    for tenant, index in (("team-a", 0), ("team-b", 1), (INCOMING, 2)):
        assert set(stamps[tenant]) == {str(i) for i in range(index, 40, 4)}, tenant
        assert all(v == expected_order for v in stamps[tenant].values()), tenant
    assert set(stamps) == {"team-a", "team-b", INCOMING}
    letters = [json.loads(line) for path in (tmp_path / "dead").rglob("*.ndjson")
               for line in path.read_text().splitlines() if line]
    refused = {dict(labels)["i"] for letter in letters
               for labels, _ in decode_series(Protocol.V1, base64.b64decode(letter["data_base64"]))}
    assert refused == {str(i) for i in range(3, 40, 4)}
    assert all("team='bad team!' is not a valid tenant id" in letter["error"] for letter in letters)
