"""The receiver through Flask's test client: protocols, attributes, auth, and every error status."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import Future
from datetime import datetime

import pytest

from receiver.app import create_app
from receiver.config import ReceiverConfig, parse_config
from receiver.publisher import Unavailable
from tests.fakes import MemoryPublisher
from transforms.core.protocol import CONTENT_TYPE_V1, CONTENT_TYPE_V2, Protocol
from transforms.core.wire import codec, snappy_block
from transforms.core.wire.builders import Series, build_v1, build_v2
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2
from transforms.core.wire.validation import NameValidation

TOPIC = "projects/test-project/topics/remote-write"
V1_HEADERS = {"Content-Type": CONTENT_TYPE_V1, "Content-Encoding": "snappy",
              "X-Prometheus-Remote-Write-Version": "0.1.0"}
V2_HEADERS = {"Content-Type": CONTENT_TYPE_V2, "Content-Encoding": "snappy",
              "X-Prometheus-Remote-Write-Version": "2.0.0"}


def make(publisher: MemoryPublisher | None = None, **overrides):
    publisher = publisher or MemoryPublisher()
    app = create_app(ReceiverConfig(topic=TOPIC, **overrides), publisher=publisher)
    return app.test_client(), publisher


def sample_series(n: int = 3) -> list[Series]:
    return [Series({"__name__": "up", "job": f"j{i}"}, [(1_700_000_000_000 + i, float(i))],
                   exemplars=[({"trace_id": "t"}, 1_700_000_000_000, 1.0)] if i == 0 else [])
            for i in range(n)]


def test_v1_write_is_published_as_received_with_attributes():
    client, publisher = make()
    body = codec.encode(build_v1(sample_series()))
    response = client.post("/api/v1/write", data=body, headers={**V1_HEADERS, "X-Scope-OrgID": "team-a"})
    assert response.status_code == 204
    [(data, attrs)] = publisher.messages
    assert data == body  # still snappy-compressed, byte for byte
    assert attrs["protocol"] == "1.0"
    assert attrs["tenant"] == "team-a"
    assert (attrs["samples"], attrs["histograms"], attrs["exemplars"]) == ("3", "0", "1")
    assert datetime.fromisoformat(attrs["received_at"].replace("Z", "+00:00")).tzinfo is not None
    assert attrs["received_at"].endswith("Z")


def test_v2_write_answers_204_with_written_headers():
    client, publisher = make()
    body = codec.encode(build_v2(sample_series(4)))
    response = client.post("/api/v1/write", data=body, headers=V2_HEADERS)
    assert response.status_code == 204
    assert response.headers["X-Prometheus-Remote-Write-Samples-Written"] == "4"
    assert response.headers["X-Prometheus-Remote-Write-Histograms-Written"] == "0"
    assert response.headers["X-Prometheus-Remote-Write-Exemplars-Written"] == "1"
    [(data, attrs)] = publisher.messages
    assert data == body
    assert attrs["protocol"] == "2.0" and attrs["tenant"] == "default"


def test_oversized_request_is_split_not_truncated():
    client, publisher = make(max_message_bytes=2000)
    many = [Series({"__name__": "m", "i": str(i)}, [(t, float(t)) for t in range(1000, 1010)]) for i in range(200)]
    response = client.post("/api/v1/write", data=codec.encode(build_v1(many)), headers=V1_HEADERS)
    assert response.status_code == 204
    assert len(publisher.messages) > 1
    total = 0
    for data, attrs in publisher.messages:
        assert len(data) <= 2000
        assert attrs["parts"] == str(len(publisher.messages))
        total += codec.decode(data, Protocol.V1, 1 << 20).counts.samples
        assert int(attrs["samples"]) > 0
    assert total == 2000


def test_single_series_over_message_limit_is_413():
    client, publisher = make(max_message_bytes=200)
    big = [Series({"__name__": "m"}, [(t, float(t)) for t in range(1000)])]
    response = client.post("/api/v1/write", data=codec.encode(build_v1(big)), headers=V1_HEADERS)
    assert response.status_code == 413
    assert publisher.messages == []


def test_health_ready_and_metrics():
    client, publisher = make()
    healthy = client.get("/-/healthy")
    assert (healthy.status_code, healthy.json) == (200, {"status": "healthy"})  # as the pipeline answers
    assert client.get("/-/ready").json == {"status": "ready"}
    publisher.ready_error = RuntimeError("topic not found")
    not_ready = make(publisher)[0].get("/-/ready")
    assert not_ready.status_code == 503 and "topic not found" in not_ready.json["error"]
    client.post("/api/v1/write", data=codec.encode(build_v1(sample_series(5))), headers=V1_HEADERS)
    client.post("/api/v1/write", data=b"junk", headers=V1_HEADERS)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'receiver_samples_accepted_total{protocol="1.0"} 5.0' in text
    assert 'receiver_exemplars_accepted_total{protocol="1.0"} 1.0' in text
    assert 'receiver_requests_total{code="204",protocol="1.0"} 1.0' in text
    assert 'receiver_requests_total{code="400",protocol="1.0"} 1.0' in text
    assert "receiver_publish_duration_seconds_count 1.0" in text
    assert "receiver_requests_in_flight 0.0" in text


# --- authentication ----------------------------------------------------------------------------

@pytest.fixture
def secrets(tmp_path):
    (tmp_path / "password").write_text("s3cret\n")
    (tmp_path / "token").write_text("tok-123\n")
    return tmp_path


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "authorization,status",
    [
        (None, 401),
        (basic("prom", "wrong"), 401),
        (basic("other", "s3cret"), 401),
        ("Basic !!!notbase64", 401),
        ("Bearer nope", 401),
        (basic("prom", "s3cret"), 204),
        ("Bearer tok-123", 204),
    ],
)
def test_auth(secrets, authorization, status):
    client, publisher = make(basic_auth_user="prom", basic_auth_password_file=str(secrets / "password"),
                             bearer_token_file=str(secrets / "token"))
    headers = dict(V1_HEADERS)
    if authorization:
        headers["Authorization"] = authorization
    response = client.post("/api/v1/write", data=codec.encode(build_v1(sample_series())), headers=headers)
    assert response.status_code == status
    if status == 401:
        assert "WWW-Authenticate" in response.headers
        assert publisher.messages == []


# --- the bad-input battery: every status, nothing published, never a 5xx for bad data ----------

GOOD_V1 = codec.encode(build_v1(sample_series()))


def _bomb() -> bytes:
    """A snappy header claiming 4 GiB, with nothing behind it."""
    return bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) + b"\x00" * 32


def _v2_bad_ref() -> bytes:
    request = remote_v2_pb2.Request(symbols=["", "__name__", "up"])
    request.timeseries.add(labels_refs=[1, 42]).samples.add(value=1, timestamp=1)
    return codec.encode(request)


def _unsorted_v1() -> bytes:
    request = remote_v1_pb2.WriteRequest()
    ts = request.timeseries.add()
    ts.labels.add(name="job", value="a")
    ts.labels.add(name="__name__", value="up")
    ts.samples.add(value=1, timestamp=1)
    return codec.encode(request)


BATTERY = [
    ("bad snappy", dict(data=b"\xff\xff\xff\xff\xff\xffjunk", headers=V1_HEADERS), 400, "snappy"),
    ("bad protobuf", dict(data=snappy_block.compress(b"\x0a\xff\xff\xff\x0fxx"), headers=V1_HEADERS), 400,
     "protobuf"),
    ("unsorted labels", dict(data=_unsorted_v1(), headers=V1_HEADERS), 400, "not sorted"),
    ("bad 2.0 symbol ref", dict(data=_v2_bad_ref(), headers=V2_HEADERS), 400, "out of range"),
    ("bad tenant", dict(data=GOOD_V1, headers={**V1_HEADERS, "X-Scope-OrgID": "../etc"}), 400, "X-Scope-OrgID"),
    ("unknown content type", dict(data=GOOD_V1, headers={**V1_HEADERS, "Content-Type": "application/json"}), 415,
     "Content-Type"),
    ("unknown proto", dict(data=GOOD_V1, headers={**V1_HEADERS,
                                                   "Content-Type": "application/x-protobuf;proto=x.Y"}), 415,
     "proto"),
    ("unknown encoding", dict(data=GOOD_V1, headers={**V1_HEADERS, "Content-Encoding": "zstd"}), 415,
     "Content-Encoding"),
    ("body too large", dict(data=b"\x00" * 5000, headers=V1_HEADERS), 413, None),
    ("decompression bomb", dict(data=_bomb(), headers=V1_HEADERS), 413, "decompressed"),
    ("too many series", dict(data=codec.encode(build_v1(sample_series(11))), headers=V1_HEADERS), 413,
     "--max-series-per-request"),
    ("malformed wire format", dict(data=snappy_block.compress(b"\x0a\x05\x00"), headers=V1_HEADERS), 400,
     "length past the end"),
]


@pytest.mark.parametrize("name,request_kwargs,status,fragment", BATTERY, ids=[b[0] for b in BATTERY])
def test_bad_input_battery(name, request_kwargs, status, fragment):
    client, publisher = make(max_body_bytes=4096, max_decompressed_bytes=1 << 20, max_series_per_request=10)
    response = client.post("/api/v1/write", **request_kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.json["code"] == status
    if fragment:
        assert fragment in response.json["error"]
    assert publisher.messages == []


def test_v2_errors_report_zero_written():
    client, _ = make()
    response = client.post("/api/v1/write", data=_v2_bad_ref(), headers=V2_HEADERS)
    assert response.status_code == 400
    assert response.headers["X-Prometheus-Remote-Write-Samples-Written"] == "0"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method_is_405(method):
    client, _ = make()
    response = client.open("/api/v1/write", method=method)
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    assert response.json["code"] == 405


def test_publish_failure_is_503_with_retry_after_never_429():
    publisher = MemoryPublisher()
    publisher.fail_with = RuntimeError("emulator down")
    client, _ = make(publisher)
    response = client.post("/api/v1/write", data=GOOD_V1, headers=V1_HEADERS)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "emulator down" in response.json["error"]


def test_over_in_flight_limit_is_503_with_retry_after():
    publisher = MemoryPublisher()
    publisher.block = threading.Event()
    client, _ = make(publisher, max_in_flight=1)
    first: dict = {}
    worker = threading.Thread(target=lambda: first.update(
        r=client.post("/api/v1/write", data=GOOD_V1, headers=V1_HEADERS)))
    worker.start()
    try:
        assert publisher.entered.wait(10)  # the first request holds the only slot, blocked in publish
        second = client.post("/api/v1/write", data=GOOD_V1, headers=V1_HEADERS)
        assert second.status_code == 503
        assert second.headers["Retry-After"] == "1"
        assert "in-flight" in second.json["error"]
    finally:
        publisher.block.set()
        worker.join()
    assert first["r"].status_code == 204
    assert len(publisher.messages) == 1


def test_publish_timeout_is_503_and_the_pending_publish_is_cancelled():
    class Never(MemoryPublisher):
        """Accepts the publish but never confirms it."""

        def __init__(self) -> None:
            super().__init__()
            self.pending: list[Future] = []

        def publish(self, data, attributes):
            self.pending.append(Future())
            return self.pending[-1]

    publisher = Never()
    client, _ = make(publisher, publish_timeout=0.05)
    response = client.post("/api/v1/write", data=GOOD_V1, headers=V1_HEADERS)
    assert response.status_code == 503 and "timed out" in response.json["error"]
    assert response.headers["Retry-After"] == "1"
    [future] = publisher.pending
    assert future.cancelled()  # the receiver gave up on it rather than leaving it to land later


# --- configuration -----------------------------------------------------------------------------

def test_every_option_also_works_as_env_var(monkeypatch, secrets):
    monkeypatch.setenv("RECEIVER_TOPIC", TOPIC)
    monkeypatch.setenv("RECEIVER_PORT", "9999")
    monkeypatch.setenv("RECEIVER_MAX_BODY_BYTES", "1234")
    monkeypatch.setenv("RECEIVER_PUBLISH_TIMEOUT", "2.5")
    monkeypatch.setenv("RECEIVER_BEARER_TOKEN_FILE", str(secrets / "token"))
    monkeypatch.setenv("RECEIVER_NAME_VALIDATION", "utf8")
    monkeypatch.setenv("RECEIVER_MAX_SERIES_PER_REQUEST", "123")
    monkeypatch.setenv("RECEIVER_MAX_IN_FLIGHT_BYTES", "99999999")
    monkeypatch.setenv("RECEIVER_BODY_READ_TIMEOUT", "3.5")
    config = parse_config([])
    assert (config.max_series_per_request, config.max_in_flight_bytes, config.body_read_timeout) == (
        123, 99999999, 3.5)
    assert (config.topic, config.port, config.max_body_bytes, config.publish_timeout) == (TOPIC, 9999, 1234, 2.5)
    assert config.bearer_token_file == str(secrets / "token")
    assert config.name_validation.value == "utf8"
    assert parse_config(["--port", "1111"]).port == 1111  # a flag beats the environment


def test_over_max_in_flight_bytes_is_503_with_retry_after():
    client, _ = make(max_decompressed_bytes=1 << 20, max_in_flight_bytes=1 << 20)
    with client.application.extensions["receiver"].ingest.in_flight_bytes.reserve(1 << 20):
        response = client.post("/api/v1/write", data=GOOD_V1, headers=V1_HEADERS)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert "max-in-flight-bytes" in response.json["error"]
    assert client.post("/api/v1/write", data=GOOD_V1, headers=V1_HEADERS).status_code == 204


def test_bad_options_fail_at_launch_with_a_message(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--topic", "not-a-topic"])
    assert "'not-a-topic' is not of the form projects/PROJECT/topics/NAME" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(["--topic", "projects/p/topics/rw"])
    assert "the topic name 'rw' has 2 characters; Pub/Sub needs 3 to 255" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(["--topic", TOPIC, "--basic-auth-user", "u"])
    assert "go together" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(["--topic", TOPIC, "--max-in-flight-bytes", "10", "--max-decompressed-bytes", "20"])
    assert "--max-in-flight-bytes must be at least" in capsys.readouterr().err


def test_a_missing_topic_says_it_is_required_and_how_to_give_it(capsys, monkeypatch):
    monkeypatch.delenv("RECEIVER_TOPIC", raising=False)
    with pytest.raises(SystemExit):
        parse_config([])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--topic is required" in err and "--topic=projects/" in err and "RECEIVER_TOPIC" in err
    assert "None" not in err


def test_empty_request_is_acknowledged_without_publishing():
    client, publisher = make()
    response = client.post("/api/v1/write", data=b"", headers=V1_HEADERS)
    assert response.status_code == 204
    assert publisher.messages == []


def test_prometheus3_names_are_accepted_by_default_and_legacy_is_opt_in():
    body = codec.encode(build_v1([Series({"__name__": "http.server.duration", "service.name": "x"}, [(1, 1.0)])]))
    client, publisher = make()
    assert client.post("/api/v1/write", data=body, headers=V1_HEADERS).status_code == 204
    strict, _ = make(name_validation=NameValidation.LEGACY)
    response = strict.post("/api/v1/write", data=body, headers=V1_HEADERS)
    assert response.status_code == 400 and "invalid" in response.json["error"]


def test_exemplar_only_2v0_series_is_accepted():
    request = build_v2([Series({"__name__": "req_total"}, [], exemplars=[({"trace_id": "t"}, 1, 0.5)])])
    client, publisher = make()
    response = client.post("/api/v1/write", data=codec.encode(request), headers=V2_HEADERS)
    assert response.status_code == 204
    assert response.headers["X-Prometheus-Remote-Write-Exemplars-Written"] == "1"
    assert len(publisher.messages) == 1


def test_a_saturated_publisher_is_503_with_retry_after():
    class Saturated(MemoryPublisher):
        def publish(self, data, attributes):
            raise Unavailable("over --max-outstanding-bytes of unconfirmed publishes")

    client, _ = make(Saturated())
    response = client.post("/api/v1/write", data=GOOD_V1, headers=V1_HEADERS)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert "max-outstanding-bytes" in response.json["error"]


def test_an_unexpected_error_is_a_json_500_so_the_sender_retries():
    class Broken(MemoryPublisher):
        def publish(self, data, attributes):
            raise KeyError("bug")

    client, _ = make(Broken())
    response = client.post("/api/v1/write", data=GOOD_V1, headers=V1_HEADERS)
    assert response.status_code == 500 and response.json["code"] == 500
