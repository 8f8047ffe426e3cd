"""The sink core without a network: config, rules, sharding/ordering/batching, requests, and the
forwarder's retry/split/dead-letter logic (against a scripted fake HTTP service)."""

from __future__ import annotations

import base64
import json
import math
import threading

import pytest

from transforms.core.protocol import STALE_NAN, STALE_NAN_BITS, Protocol, float_bits
from transforms.core.retry import Attempt, Outcome, classify
from transforms.core.sink import config
from transforms.core.sink.auth import BasicAuth, BearerAuth, NoAuth
from transforms.core.sink.batching import ShardBatch, TimeSeries, cut, halves, merge, shard_of
from transforms.core.sink.relabel import apply_rules, parse_rule
from transforms.core.sink.request import USER_AGENT, headers_for
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1, build_v2
from transforms.core.wire.convert import build_v2_request, label_keys, series_key
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2
from transforms.io.sink_auth import authorization, authorize
from transforms.io.sink_driver import Forwarder, Stopped

URL = "http://127.0.0.1:9/api/v1/write"


def series(name: str, samples, **labels: str) -> TimeSeries:
    out = TimeSeries()
    for k, v in sorted({"__name__": name, **labels}.items()):
        out.labels.add(name=k, value=v)
    out.samples.extend(remote_v1_pb2.Sample(timestamp=t, value=v) for t, v in samples)
    return out


def message(request, tenant: str = "default", protocol: Protocol = Protocol.V1) -> tuple[bytes, dict[str, str]]:
    return codec.encode(request), codec.message_attributes(protocol, tenant, "now", codec.count(request))


# -- config ---------------------------------------------------------------------------------------

def test_flags_give_one_sink_per_url_with_stable_names():
    sinks = config.from_flags([f"{URL},http://vm:8428/api/v1/write"], protocol="2.0", headers=["X-Team: infra"])
    assert [s.protocol for s in sinks] == [Protocol.V2, Protocol.V2]
    assert sinks[0].headers == (("X-Team", "infra"),)
    assert sinks[1].name == "rw-vm-8428-api-v1-write"
    derived = sinks[1].subscription_for("projects/p/subscriptions/in")
    assert derived == "projects/p/subscriptions/in-rw-vm-8428-api-v1-write"
    assert config.from_flags([URL])[0].name == config.from_flags([URL])[0].name


@pytest.mark.parametrize("header", ["Content-Type: text/plain", "user-agent: x", "X-Prometheus-Remote-Write-Version: 9",
                                    "Content-Encoding: gzip", "X-Scope-OrgID: t"])
def test_reserved_headers_cannot_be_overridden(header):
    with pytest.raises(config.SinkConfigError, match="cannot be set|tenant"):
        config.from_flags([URL], headers=[header])


@pytest.mark.parametrize("bad, match", [
    ({"url": "ftp://x/"}, "http"), ({"url": URL, "protocol": "3.0"}, "3.0"),
    ({"url": URL, "tenant_header": "maybe"}, "tenant_header"), ({"url": URL, "tenant": "a/b"}, "tenant"),
    ({"url": URL, "queue_config": {"shards": 0}}, "shards"), ({"url": URL, "bogus": 1}, "bogus"),
    ({"url": URL, "remote_timeout": "soon"}, "duration"),
    ({"url": URL, "write_relabel_configs": [{"action": "replace"}]}, "action"),
    ({"url": URL, "write_relabel_configs": [{"action": "drop", "regex": "("}]}, "regex"),
])
def test_sinks_file_errors_name_the_setting(bad, match):
    with pytest.raises(config.SinkConfigError, match=match):
        config.from_document(json.dumps({"remote_write": [bad]}))


def test_sinks_file_reads_every_setting():
    (sink,) = config.from_document(f"""
remote_write:
  - url: {URL}
    name: vm
    protocol: "2.0"
    remote_timeout: 500ms
    headers: {{X-A: b}}
    basic_auth: {{username: u, password: p}}
    tenant_header: drop
    queue_config: {{max_samples_per_send: 10, max_bytes_per_send: 1000, shards: 2, batch_send_deadline: 2s,
                   min_backoff: 10ms, max_backoff: 1m, max_retry_duration: 1h}}
    write_relabel_configs: [{{action: drop, source_labels: [__name__], regex: "go_.*"}}]
    healthcheck: {{enabled: true, url: http://x/health}}
""")
    assert (sink.name, sink.protocol, sink.timeout, sink.tenant_header) == ("vm", Protocol.V2, 0.5, "drop")
    queue = sink.queue
    assert (queue.shards, queue.flush_seconds, queue.min_backoff, queue.max_backoff) == (2, 2.0, 0.01, 60.0)
    assert (queue.max_samples_per_request, queue.max_bytes_per_request, queue.max_retry_duration) == (10, 1000, 3600.0)
    assert sink.auth == BasicAuth(username="u", password="p")
    assert sink.healthcheck.enabled and sink.healthcheck.url == "http://x/health" and len(sink.rules) == 1
    with pytest.raises(config.SinkConfigError, match="unique"):
        config.from_document(json.dumps({"remote_write": [{"url": URL, "name": "a"}, {"url": URL, "name": "a"}]}))


# -- rules ----------------------------------------------------------------------------------------

def test_keep_drop_labeldrop_follow_prometheus_semantics():
    labels = [("__name__", "go_goroutines"), ("instance", "a:1"), ("job", "node")]
    drop_go = parse_rule({"action": "drop", "source_labels": ["__name__"], "regex": "go_.*"}, "r")
    assert apply_rules([drop_go], labels) is None
    assert apply_rules([drop_go], [("__name__", "xgo_y")]) is not None, "the regex is anchored"
    keep_job = parse_rule({"action": "keep", "source_labels": ["job", "instance"], "regex": "node;a:.*"}, "r")
    assert apply_rules([keep_job], labels) == labels
    assert apply_rules([keep_job], [("__name__", "x"), ("job", "node")]) is None, "a missing label is ''"
    labeldrop = parse_rule({"action": "labeldrop", "regex": "inst.*"}, "r")
    assert apply_rules([labeldrop], labels) == [("__name__", "go_goroutines"), ("job", "node")]
    labelkeep = parse_rule({"action": "labelkeep", "regex": "__name__|job"}, "r")
    assert apply_rules([labelkeep], labels) == [("__name__", "go_goroutines"), ("job", "node")]


# -- sharding, ordering, batching -------------------------------------------------------------------

def test_label_keys_ignore_sample_counts_and_match_python_built_keys():
    a = series("m", [(1, 1.0)], i="1")
    b = series("m", [(2, 2.0), (3, 3.0)], i="1")
    payload = build_v1([]).SerializeToString()
    request = remote_v1_pb2.WriteRequest(timeseries=[a, b])
    keys = label_keys(request.SerializeToString())
    assert keys[0] == keys[1] == series_key(a) == series_key(b)
    assert payload == b""
    assert shard_of(keys[0], 8) == shard_of(series_key(b), 8), "stable: no salted hash()"


def test_merge_orders_by_timestamp_dedupes_repeats_and_keeps_stale_bits():
    parts = [series("m", [(30, 3.0), (10, 1.0)]), series("m", [(20, STALE_NAN), (10, 1.0)])]
    merged = merge(parts)
    assert [s.timestamp for s in merged.samples] == [10, 20, 30]
    assert float_bits(merged.samples[1].value) == STALE_NAN_BITS
    ordinary = series("m", [(1, math.nan), (2, STALE_NAN)])
    kept = merge([ordinary, ordinary])
    assert [float_bits(s.value) != STALE_NAN_BITS for s in kept.samples] == [True, False]


def test_requests_respect_max_samples_and_bytes_and_cut_big_series_in_order():
    batch = ShardBatch()
    for i in range(10):
        s = series("m", [(t, float(t)) for t in range(3)], i=str(i))
        batch.add(series_key(s), s)
    big = series("big", [(t, 0.0) for t in range(25)])
    batch.add(series_key(big), big)
    requests = list(batch.requests(max_points=10, max_bytes=1 << 20))
    assert all(sum(len(s.samples) for s in r) <= 10 for r in requests)
    assert sum(len(s.samples) for r in requests for s in r) == 55
    big_pieces = [s for r in requests for s in r if s.labels[0].value == "big"]
    assert [p.samples[0].timestamp for p in big_pieces] == [0, 10, 20]
    small = list(batch.requests(max_points=1000, max_bytes=200))
    assert len(small) > 1 and all(sum(s.ByteSize() for s in r) <= 200 or len(r) == 1 for r in small)
    assert cut(big, 100) == [big]


def test_halves_isolate_series_then_samples():
    two = [series("a", [(1, 1.0)]), series("b", [(1, 1.0)])]
    assert [len(h) for h in halves(two)] == [1, 1]
    first, second = halves([series("a", [(1, 1.0), (2, 2.0), (3, 3.0)])])
    assert [s.timestamp for s in first[0].samples] == [1] and [s.timestamp for s in second[0].samples] == [2, 3]
    assert halves([series("a", [(1, 1.0)])]) is None


# -- requests -------------------------------------------------------------------------------------

def test_headers_per_spec_auth_and_tenant(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    v1 = config.from_flags([URL], headers=["X-A: b"], bearer_token_file=str(token))[0]
    headers = authorize(v1.auth, URL, b"body", headers_for(v1, "team-a"))  # what HttpService.post sends
    assert headers == {"X-A": "b", "Authorization": "Bearer s3cret", "X-Scope-OrgID": "team-a",
                       "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                       "X-Prometheus-Remote-Write-Version": "0.1.0", "User-Agent": USER_AGENT}
    v2 = config.from_flags([URL], protocol="2.0", tenant_header="drop")[0]
    headers = headers_for(v2, "team-a")
    assert "X-Scope-OrgID" not in headers
    assert headers["Content-Type"] == "application/x-protobuf;proto=io.prometheus.write.v2.Request"
    assert headers["X-Prometheus-Remote-Write-Version"] == "2.0.0"
    assert headers_for(config.from_flags([URL], tenant="fixed")[0], "team-a")["X-Scope-OrgID"] == "fixed"


def test_auth_is_one_type_and_flags_and_sinks_file_build_the_same_sink(tmp_path):
    password = tmp_path / "password"
    password.write_text("pa:ss\n")
    from_flags = config.from_flags([URL], basic_auth_username="u", basic_auth_password_file=str(password),
                                   shards=2, timeout=5)[0]
    (from_file,) = config.from_document(json.dumps({"remote_write": [{
        "url": URL, "basic_auth": {"username": "u", "password_file": str(password)},
        "queue_config": {"shards": 2}, "remote_timeout": 5}]}))
    assert from_flags == from_file
    assert from_flags.auth == BasicAuth(username="u", password_file=str(password))
    # "u:pa:ss" in base64, as requests' HTTPBasicAuth sends it
    assert authorization(from_flags.auth) == "Basic dTpwYTpzcw=="
    assert config.from_flags([URL], bearer_token_file="/t")[0].auth == BearerAuth(token_file="/t")
    assert config.from_flags([URL])[0].auth == NoAuth() and authorization(NoAuth()) is None
    assert "Authorization" not in headers_for(from_flags, None)  # the HTTP service applies auth, last
    with pytest.raises(config.SinkConfigError, match="not both"):
        config.from_flags([URL], bearer_token_file="/t", basic_auth_username="u")


def test_v2_request_carries_labels_samples_exemplars_and_family_metadata():
    s = series("http_requests_total", [(5, 1.5), (6, STALE_NAN)], code="200")
    s.exemplars.add(timestamp=5, value=1.0).labels.add(name="trace_id", value="abc")
    request = build_v2_request([s], lambda name: (1, "Requests.", "") if name == "http_requests_total" else None)
    out = request.timeseries[0]
    symbols = request.symbols
    assert symbols[0] == ""
    assert [symbols[r] for r in out.labels_refs] == ["__name__", "http_requests_total", "code", "200"]
    assert [(x.timestamp, float_bits(x.value)) for x in out.samples][1] == (6, STALE_NAN_BITS)
    assert [symbols[r] for r in out.exemplars[0].labels_refs] == ["trace_id", "abc"]
    assert out.metadata.type == 1 and symbols[out.metadata.help_ref] == "Requests."
    assert codec.decode(codec.encode(request), Protocol.V2, 1 << 20).counts.samples == 2


# -- the forwarder (scripted HTTP answers) ----------------------------------------------------------

def everything_written(request) -> tuple[int, int, int]:
    counts = codec.count(request)
    return counts.samples, counts.histograms, counts.exemplars


class ScriptedService:
    """Answers each POST by a rule over the decoded request; records every request."""

    def __init__(self, answer, written=None) -> None:
        """`written(request)`: the *-Written counts a 2.0 answer carries, or None for no headers (a 1.x
        receiver); by default everything sent, as a 2.0 receiver that wrote it all."""
        self.answer = answer
        self.written = written or everything_written
        self.requests: list[tuple[remote_v1_pb2.WriteRequest, dict]] = []
        self.lock = threading.Lock()

    def post(self, body: bytes, headers: dict[str, str], points: int = 0) -> Attempt:
        protocol = codec.protocol_for_content_type(headers["Content-Type"])
        decoded = codec.decode(body, protocol, 1 << 24).message
        with self.lock:
            self.requests.append((decoded, headers))
            status, retry_after = self.answer(decoded, len(self.requests))
        written = self.written(decoded) if protocol is Protocol.V2 else None
        return Attempt(classify(status, None, {"Retry-After": retry_after} if retry_after else {}), f"answer {status}",
                       0.001, written=written)


def forwarder(answer, **flags) -> tuple[Forwarder, ScriptedService]:
    sink = config.from_flags([URL], **flags)[0]
    service = ScriptedService(answer)
    return Forwarder(sink, service=service), service


def names(request) -> set[str]:
    return {dict((lab.name, lab.value) for lab in s.labels)["__name__"] for s in request.timeseries}


def test_a_final_400_is_split_down_to_the_refused_series_and_the_rest_is_delivered():
    good = [Series({"__name__": f"ok{i}"}, [(1, 1.0)]) for i in range(20)]
    bad = Series({"__name__": "bad"}, [(1, 1.0)])
    fwd, service = forwarder(lambda req, n: (400 if "bad" in names(req) else 204, None), shards=1)
    dead = fwd.forward([message(build_v1([*good[:10], bad, *good[10:]]))])
    delivered = set().union(*(names(r) for r, _ in service.requests if "bad" not in names(r)))
    assert delivered == {f"ok{i}" for i in range(20)}
    assert len(dead) == 1
    record = json.loads(dead[0])
    assert record["status"] == 400 and record["sink"] == fwd.sink.name and "answer 400" in record["error"]
    body = codec.decode(base64.b64decode(record["data_base64"]), Protocol.V1, 1 << 20).message
    assert names(body) == {"bad"} and record["attributes"]["protocol"] == "1.0"
    stats = fwd.stats.snapshot()
    assert (stats["samples_sent"], stats["samples_dead_lettered"]) == (20, 1)


def test_other_final_4xx_dead_letter_the_whole_request_without_splitting():
    fwd, service = forwarder(lambda req, n: (401, None), shards=1)
    dead = fwd.forward([message(build_v1([Series({"__name__": f"m{i}"}, [(1, 1.0)]) for i in range(8)]))])
    assert len(service.requests) == 1 and len(dead) == 1
    assert fwd.stats.snapshot()["samples_dead_lettered"] == 8


def test_5xx_and_429_are_retried_until_accepted():
    fwd, service = forwarder(lambda req, n: ((503, None), (429, "0"), (204, None))[min(n, 3) - 1], shards=1)
    assert fwd.forward([message(build_v1([Series({"__name__": "m"}, [(1, 1.0)])]))]) == []
    stats = fwd.stats.snapshot()
    assert len(service.requests) == 3
    assert (stats["samples_sent"], stats["samples_retried"], stats["samples_failed"]) == (1, 2, 2)


def test_stopping_while_the_sink_fails_raises_so_nothing_is_acked():
    fwd, _ = forwarder(lambda req, n: (503, None), shards=1)
    fwd.stopping.set()
    with pytest.raises(Stopped):
        fwd.forward([message(build_v1([Series({"__name__": "m"}, [(1, 1.0)])]))])


def test_one_series_is_never_split_across_shards_and_each_shard_sends_in_time_order():
    fwd, service = forwarder(lambda req, n: (204, None), shards=4, max_samples_per_request=7)
    msgs = [message(build_v1([Series({"__name__": "m", "i": str(i)}, [(1000 - t, float(t))]) for i in range(30)]))
            for t in range(10)]  # newest first: the forwarder must reorder
    assert fwd.forward(msgs) == []
    seen: dict[str, list[int]] = {}
    for request, _ in service.requests:
        for s in request.timeseries:
            key = dict((lab.name, lab.value) for lab in s.labels)["i"]
            seen.setdefault(key, []).extend(x.timestamp for x in s.samples)
    assert len(seen) == 30 and all(stamps == sorted(stamps) and len(stamps) == 10 for stamps in seen.values())


def test_tenants_batch_apart_and_rules_drop_before_sending():
    rules = config.from_document(json.dumps({"remote_write": [{"url": URL, "write_relabel_configs": [
        {"action": "drop", "source_labels": ["__name__"], "regex": "go_.*"},
        {"action": "labeldrop", "regex": "instance"}]}]}))[0]
    service = ScriptedService(lambda req, n: (204, None))
    fwd = Forwarder(rules, service=service)
    request = build_v1([Series({"__name__": "go_x", "instance": "a"}, [(1, 1.0)]),
                        Series({"__name__": "up", "instance": "a"}, [(1, 1.0)])])
    fwd.forward([message(request, "t1"), message(request, "t2")])
    tenants = sorted(h["X-Scope-OrgID"] for _, h in service.requests)
    assert tenants == ["t1", "t2"]
    assert all([[(lab.name, lab.value) for lab in s.labels] for s in r.timeseries] == [[("__name__", "up")]]
               for r, _ in service.requests)
    assert fwd.stats.snapshot()["samples_dropped_by_rules"] == 2


def test_v2_input_and_metadata_are_forwarded_as_2_0_with_per_series_metadata():
    fwd, service = forwarder(lambda req, n: (204, None), protocol="2.0", shards=2)
    metadata = build_v1([], [Series({"__name__": "reqs"}, metric_type="counter", help="Requests.")])
    v2 = build_v2([Series({"__name__": "temp"}, [(1, 20.5)], metric_type="gauge", unit="celsius")])
    fwd.forward([message(metadata), message(build_v1([Series({"__name__": "reqs_total"}, [(1, 1.0)])])),
                 message(v2, protocol=Protocol.V2)])
    got = {}
    for request, headers in service.requests:
        assert isinstance(request, remote_v2_pb2.Request) and headers["X-Prometheus-Remote-Write-Version"] == "2.0.0"
        for s in request.timeseries:
            got[request.symbols[s.labels_refs[1]]] = (s.metadata.type, request.symbols[s.metadata.help_ref],
                                                      request.symbols[s.metadata.unit_ref])
    assert got == {"reqs_total": (1, "Requests.", ""), "temp": (2, "", "celsius")}


def test_a_poison_message_is_dead_lettered_whole_and_the_rest_still_goes():
    fwd, service = forwarder(lambda req, n: (204, None))
    dead = fwd.forward([(b"not snappy", {"protocol": "1.0", "tenant": "t"}),
                        message(build_v1([Series({"__name__": "m"}, [(1, 1.0)])]))])
    assert len(dead) == 1 and base64.b64decode(json.loads(dead[0])["data_base64"]) == b"not snappy"
    assert fwd.stats.snapshot()["samples_sent"] == 1


def test_outcome_classification_is_the_retry_modules():
    assert classify(503, None).status == 503 and isinstance(classify(503, None), Outcome)


# -- sender compliance (spec 2.0, prometheus/compliance sender cases) --------------------------------

def label_sets(service: ScriptedService) -> list[list[tuple[str, str]]]:
    out = []
    for request, _ in service.requests:
        for s in request.timeseries:
            if isinstance(request, remote_v2_pb2.Request):
                refs = s.labels_refs
                out.append([(request.symbols[refs[i]], request.symbols[refs[i + 1]]) for i in range(0, len(refs), 2)])
            else:
                out.append([(lab.name, lab.value) for lab in s.labels])
    return out


@pytest.mark.parametrize("protocol", ["1.0", "2.0"])
def test_labels_with_empty_values_are_dropped_when_forwarding(protocol):
    fwd, service = forwarder(lambda req, n: (204, None), protocol=protocol, shards=1)
    v1 = build_v1([Series({"__name__": "m", "empty": "", "job": "a"}, [(1, 1.0)])])
    v2 = build_v2([Series({"__name__": "n", "empty": "", "job": "b"}, [(1, 1.0)])])
    assert fwd.forward([message(v1), message(v2, protocol=Protocol.V2)]) == []
    assert sorted(label_sets(service)) == [[("__name__", "m"), ("job", "a")], [("__name__", "n"), ("job", "b")]]
    assert fwd.stats.snapshot()["samples_sent"] == 2


def test_a_rule_that_empties_nothing_keeps_the_series_as_sent():
    fwd, service = forwarder(lambda req, n: (204, None), shards=1)
    request = build_v1([Series({"__name__": "m", "job": "a"}, [(1, 1.0)])])
    fwd.forward([message(request)])
    assert service.requests[0][0].timeseries[0] == request.timeseries[0]


def test_a_2_0_sink_answering_415_gets_1_0_from_then_on():
    fwd, service = forwarder(lambda req, n: (415 if isinstance(req, remote_v2_pb2.Request) else 204, None),
                             protocol="2.0", shards=1)
    first = build_v1([Series({"__name__": "m"}, [(1, 1.0)])])
    assert fwd.forward([message(first)]) == []
    assert fwd.forward([message(build_v1([Series({"__name__": "m"}, [(2, 2.0)])]))]) == []
    versions = [h["X-Prometheus-Remote-Write-Version"] for _, h in service.requests]
    assert versions == ["2.0.0", "0.1.0", "0.1.0"], "one 2.0 try, then 1.0 remembered"
    assert service.requests[1][1]["Content-Type"] == "application/x-protobuf"
    stats = fwd.stats.snapshot()
    assert (stats["samples_sent"], stats["samples_dead_lettered"], stats["protocol_fallbacks"]) == (2, 0, 1)
    assert fwd.protocol is Protocol.V1 and fwd.sink.protocol is Protocol.V2


def test_a_2xx_without_written_headers_is_a_1_x_receiver_and_the_data_is_resent_as_1_0():
    service = ScriptedService(lambda req, n: (204, None), written=lambda request: None)
    fwd = Forwarder(config.from_flags([URL], protocol="2.0", shards=1)[0], service=service)
    assert fwd.forward([message(build_v1([Series({"__name__": "m"}, [(1, 1.0), (2, 2.0)])]))]) == []
    (v2, _), (v1, _) = service.requests
    assert isinstance(v2, remote_v2_pb2.Request) and isinstance(v1, remote_v1_pb2.WriteRequest)
    assert [(x.timestamp, x.value) for x in v1.timeseries[0].samples] == [(1, 1.0), (2, 2.0)]
    assert fwd.stats.snapshot()["samples_sent"] == 2 and fwd.protocol is Protocol.V1


def test_written_counts_below_what_was_sent_are_counted_and_logged(caplog):
    service = ScriptedService(lambda req, n: (204, None), written=lambda request: (1, 0, 0))
    fwd = Forwarder(config.from_flags([URL], protocol="2.0", shards=1)[0], service=service)
    fwd.forward([message(build_v1([Series({"__name__": "m"}, [(1, 1.0), (2, 2.0), (3, 3.0)])]))])
    stats = fwd.stats.snapshot()
    assert (stats["samples_sent"], stats["samples_not_written"], stats["protocol_fallbacks"]) == (3, 2, 0)
    assert "wrote 1 of 3 samples" in caplog.text
    assert fwd.protocol is Protocol.V2, "a 2.0 receiver that reports counts stays on 2.0"


def v2_with_start_timestamps() -> remote_v2_pb2.Request:
    request = build_v2([Series({"__name__": "c_total"}, [(2000, 1.0), (3000, 2.0)], metric_type="counter"),
                        Series({"__name__": "old_style_total"}, [(2000, 5.0)], metric_type="counter"),
                        Series({"__name__": "h"}, metric_type="histogram")])
    request.timeseries[0].samples[0].start_timestamp = 1000  # rc.4: per sample
    h = request.timeseries[2].histograms.add(count_int=2, sum=1.0, schema=0, timestamp=2500, start_timestamp=900)
    h.positive_spans.add(offset=0, length=1)
    h.positive_deltas.append(2)
    request.timeseries[1].created_timestamp = 700  # before rc.4: per series
    return request


def start_stamps(request: remote_v2_pb2.Request) -> dict[str, list[tuple[int, int]]]:
    out: dict[str, list[tuple[int, int]]] = {}
    for s in request.timeseries:
        name = request.symbols[s.labels_refs[1]]
        out.setdefault(name, []).extend((x.timestamp, x.start_timestamp) for x in (*s.samples, *s.histograms))
    return out


def test_2_0_to_2_0_keeps_start_timestamps_and_turns_created_timestamp_into_them():
    fwd, service = forwarder(lambda req, n: (204, None), protocol="2.0", shards=1)
    assert fwd.forward([message(v2_with_start_timestamps(), protocol=Protocol.V2)]) == []
    # the float series in a compiled request, the histogram series in one of its own (the slower path)
    assert len(service.requests) == 2
    stamps: dict[str, list[tuple[int, int]]] = {}
    for request, _ in service.requests:
        stamps.update(start_stamps(request))
        assert all(not s.created_timestamp for s in request.timeseries), "field 6 is reserved since rc.4"
    assert stamps == {"c_total": [(2000, 1000), (3000, 0)], "h": [(2500, 900)], "old_style_total": [(2000, 700)]}


def test_2_0_to_1_0_sends_no_unknown_fields():
    fwd, service = forwarder(lambda req, n: (204, None), protocol="1.0", shards=1)
    fwd.forward([message(v2_with_start_timestamps(), protocol=Protocol.V2)])
    stamps = []
    for request, _ in service.requests:  # the metadata goes in a request of its own, as Prometheus does
        plain = remote_v1_pb2.WriteRequest()
        plain.CopyFrom(request)
        plain.DiscardUnknownFields()
        assert request.SerializeToString() == plain.SerializeToString()
        stamps += [x.timestamp for s in request.timeseries for x in (*s.samples, *s.histograms)]
    assert sorted(stamps) == [2000, 2000, 2500, 3000]


def test_a_tenant_label_is_read_dropped_only_when_valid_and_absent_means_the_fallback():
    from transforms.core.sink.tenants import split_tenant

    labels = (("__name__", "up"), ("job", "j"), ("team", "team-a"))
    assert split_tenant(labels, "team", drop=False) == (labels, "team-a")
    assert split_tenant(labels, "team", drop=True) == ((("__name__", "up"), ("job", "j")), "team-a")
    assert split_tenant(labels[:2], "team", drop=True) == (labels[:2], "")
    bad = (("__name__", "up"), ("team", "a b"))
    assert split_tenant(bad, "team", drop=True) == (bad, "a b")  # kept, so the dead letter shows it


class RefusingService:
    """A sink nobody listens on: every POST is a refused connection."""

    def __init__(self) -> None:
        self.posts = 0

    def post(self, body: bytes, headers: dict[str, str], points: int = 0) -> Attempt:
        self.posts += 1
        return Attempt(classify(None, ConnectionRefusedError(111, "Connection refused")), "", 0.0)


def test_max_retry_duration_bounds_the_outage_not_each_request_and_logs_one_line_per_give_up(caplog):
    import dataclasses
    import logging
    import time

    sink = config.from_flags([URL])[0]
    sink = dataclasses.replace(sink, queue=dataclasses.replace(sink.queue, max_retry_duration=0.5))
    service = RefusingService()
    fwd = Forwarder(sink, service=service)
    caplog.set_level(logging.DEBUG, logger="transforms.io.sink_driver")
    started = time.monotonic()
    dead = [fwd.deliver("t", [series("m", [(1, float(i))], i=str(i))]) for i in range(5)]
    elapsed = time.monotonic() - started
    assert 0.45 < elapsed < 1.0, elapsed  # the budget once (a last try at its end), then at once for the rest
    assert [len(d) for d in dead] == [1] * 5 and service.posts > 5
    records = [r for r in caplog.records if r.name == "transforms.io.sink_driver"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    errors = [r.getMessage() for r in records if r.levelno == logging.ERROR]
    assert len(warnings) == 1 and len(errors) == 5 and not any(r.exc_info for r in records)
    assert all("\n" not in line and len(line) < 250 for line in warnings + errors), warnings + errors
    assert "connection refused (ConnectionRefusedError: [Errno 111] Connection refused)" in errors[0]
    assert "gave up after" in errors[-1] and "; 1 sample dead-lettered" in errors[-1]
    stats = fwd.stats.snapshot()
    assert (stats["requests_dead_lettered"], stats["samples_dead_lettered"]) == (5, 5)


def test_a_refused_metadata_only_request_counts_as_a_dead_lettered_request():
    fwd, _ = forwarder(lambda req, n: (400, None), shards=1)
    metadata = [remote_v1_pb2.MetricMetadata(metric_family_name="m", type=remote_v1_pb2.MetricMetadata.COUNTER)]
    assert len(fwd.deliver("t", [], metadata)) == 1
    stats = fwd.stats.snapshot()
    counts = (stats["requests_dead_lettered"], stats["samples_dead_lettered"], stats["metadata_dead_lettered"])
    assert counts == (1, 0, 1)
