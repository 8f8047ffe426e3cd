"""The receiver under gunicorn against the real Pub/Sub emulator: what is acknowledged is in Pub/Sub."""

from __future__ import annotations

import http.client
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest
import requests

from receiver.publisher import PubSubPublisher, Unavailable
from tools import services
from transforms.core.protocol import CONTENT_TYPE_V1, CONTENT_TYPE_V2, STALE_NAN, float_bits, is_stale_marker
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1, build_v2

V1 = {"Content-Type": CONTENT_TYPE_V1, "Content-Encoding": "snappy", "X-Prometheus-Remote-Write-Version": "0.1.0"}
V2 = {"Content-Type": CONTENT_TYPE_V2, "Content-Encoding": "snappy", "X-Prometheus-Remote-Write-Version": "2.0.0"}


@pytest.fixture
def receiver(log_dir, pubsub_emulator, topic_and_subscription, request):
    topic, subscription = topic_and_subscription
    args = getattr(request, "param", ())
    service, url = services.start_receiver(log_dir, pubsub_emulator, topic, args=args)
    try:
        yield url, subscription
    finally:
        service.stop()


def batch(request_no: int, n: int = 50) -> list[Series]:
    return [Series({"__name__": "load_metric", "req": str(request_no), "i": str(i)},
                   [(1_700_000_000_000 + request_no, float(request_no * 1000 + i))]) for i in range(n)]


def test_v1_and_v2_are_published_as_received(receiver):
    url, subscription = receiver
    v1_body = codec.encode(build_v1([Series({"__name__": "up", "job": "a"}, [(1000, 1.0), (2000, STALE_NAN)])]))
    v2_body = codec.encode(build_v2([Series({"__name__": "temp", "room": "b"}, [(1000, 21.5)], metric_type="gauge")]))
    r1 = requests.post(f"{url}/api/v1/write", data=v1_body, headers={**V1, "X-Scope-OrgID": "acme"})
    r2 = requests.post(f"{url}/api/v1/write", data=v2_body, headers=V2)
    assert (r1.status_code, r2.status_code) == (204, 204)
    assert r2.headers["X-Prometheus-Remote-Write-Samples-Written"] == "1"
    by_protocol = {m.attributes["protocol"]: m for m in subscription.drain(expect=2)}
    assert by_protocol["1.0"].data == v1_body
    assert by_protocol["1.0"].attributes["tenant"] == "acme"
    assert by_protocol["1.0"].attributes["samples"] == "2"
    assert by_protocol["2.0"].data == v2_body
    assert by_protocol["2.0"].attributes["tenant"] == "default"
    stale = by_protocol["1.0"].decode().message.timeseries[0].samples[1].value
    assert is_stale_marker(stale) and float_bits(stale) == float_bits(STALE_NAN)


def test_concurrent_load_loses_nothing_and_metrics_add_up(receiver):
    url, subscription = receiver
    bodies = [codec.encode(build_v1(batch(i))) for i in range(200)]
    with ThreadPoolExecutor(16) as pool, requests.Session() as session:
        statuses = list(pool.map(lambda b: session.post(f"{url}/api/v1/write", data=b, headers=V1).status_code,
                                 bodies))
    assert statuses == [204] * 200
    messages = subscription.drain(expect=200)
    assert sorted(m.data for m in messages) == sorted(bodies)
    values = sorted(s.value for m in messages for ts in m.decode().message.timeseries for s in ts.samples)
    assert values == sorted(float(r * 1000 + i) for r in range(200) for i in range(50))
    # both gunicorn workers' counters are aggregated
    text = requests.get(f"{url}/metrics").text
    assert re.search(r'receiver_samples_accepted_total\{protocol="1.0"\} 10000\.0', text), text
    assert re.search(r'receiver_requests_total\{code="204",protocol="1.0"\} 200\.0', text)
    assert re.search(r"receiver_published_messages_total 200\.0", text)


@pytest.mark.parametrize("receiver", [("--max-message-bytes", "4000")], indirect=True)
def test_request_over_the_message_limit_is_split_and_fully_published(receiver):
    url, subscription = receiver
    big = build_v2([Series({"__name__": "big", "i": str(i)}, [(t, float(i)) for t in range(1000, 1100)])
                    for i in range(100)])
    response = requests.post(f"{url}/api/v1/write", data=codec.encode(big), headers=V2)
    assert response.status_code == 204
    assert response.headers["X-Prometheus-Remote-Write-Samples-Written"] == "10000"
    messages = subscription.drain(timeout=20)
    assert len(messages) > 1
    assert {m.attributes["parts"] for m in messages} == {str(len(messages))}
    assert sum(m.decode().counts.samples for m in messages) == 10000
    assert all(len(m.data) <= 4000 for m in messages)


@pytest.mark.parametrize("receiver", [("--max-body-bytes", "2048")], indirect=True)
def test_bad_inputs_over_real_http_publish_nothing(receiver):
    url, subscription = receiver
    good = codec.encode(build_v1(batch(1, 2)))
    cases = [
        (dict(data=b"\xff\xff\xff\xff\xffjunk", headers=V1), 400),
        (dict(data=good, headers={**V1, "Content-Type": "text/plain"}), 415),
        (dict(data=good, headers={**V1, "Content-Encoding": "gzip"}), 415),
        (dict(data=b"\x00" * 4096, headers=V1), 413),
    ]
    for kwargs, status in cases:
        response = requests.post(f"{url}/api/v1/write", **kwargs)
        assert response.status_code == status, response.text
        assert response.json()["code"] == status
    assert requests.get(f"{url}/api/v1/write").status_code == 405
    # a chunked body (no Content-Length) over the limit is refused too
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    conn.request("POST", "/api/v1/write", body=iter([b"x" * 1500, b"y" * 1500]), headers=V1, encode_chunked=True)
    assert conn.getresponse().status == 413
    conn.close()
    assert subscription.drain(quiet=1.0) == []


def test_publisher_over_max_outstanding_bytes_raises_its_own_unavailable(topic_and_subscription):
    """Over --max-outstanding-bytes of unconfirmed publishes, the publisher itself refuses: Unavailable (503)."""
    topic, subscription = topic_and_subscription
    publisher = PubSubPublisher(topic, max_outstanding_bytes=1000)
    small = codec.encode(build_v1(batch(1, 1)))
    publisher.publish(small, {"n": "1"}).result(timeout=30)
    with pytest.raises(Unavailable, match="max-outstanding-bytes"):
        publisher.publish(b"x" * 5000, {"n": "2"})
    assert [m.data for m in subscription.drain(expect=1)] == [small]


def test_ready_and_503_when_pubsub_is_down(log_dir, tmp_path):
    """A separate emulator we can kill: the receiver must answer 503 + Retry-After, never 2xx or 429."""
    emulator, host = services.start_pubsub_emulator(tmp_path)
    topic = "projects/test-project/topics/outage"
    services.create_topic_and_subscription(host, topic, "projects/test-project/subscriptions/outage-sub")
    receiver, url = services.start_receiver(log_dir, host, topic, args=["--publish-timeout", "3"],
                                            name="receiver-outage")
    try:
        assert requests.get(f"{url}/-/ready").status_code == 200
        body = codec.encode(build_v1(batch(7, 3)))
        assert requests.post(f"{url}/api/v1/write", data=body, headers=V1).status_code == 204
        emulator.stop()
        response = requests.post(f"{url}/api/v1/write", data=body, headers=V1, timeout=30)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        services.wait_until(lambda: requests.get(f"{url}/-/ready").status_code == 503, 30, "not ready")
    finally:
        receiver.stop()
        emulator.stop()


def test_not_ready_when_topic_missing(log_dir, pubsub_emulator):
    receiver, url = services.start_receiver(log_dir, pubsub_emulator, "projects/test-project/topics/no-such-topic",
                                            name="receiver-missing-topic")
    try:
        response = requests.get(f"{url}/-/ready")
        assert response.status_code == 503
        assert "no-such-topic" in response.json()["error"]
        body = codec.encode(build_v1(batch(1, 1)))
        assert requests.post(f"{url}/api/v1/write", data=body, headers=V1, timeout=60).status_code == 503
    finally:
        receiver.stop()


def test_tls_and_bearer_token(log_dir, pubsub_emulator, topic_and_subscription, tmp_path):
    """HTTPS with the TLS cert/key options, and a bearer token read from a file."""
    topic, subscription = topic_and_subscription
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    (tmp_path / "token").write_text("secret-token\n")
    receiver, url = services.start_receiver(
        log_dir, pubsub_emulator, topic, name="receiver-tls",
        args=["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--bearer-token-file", str(tmp_path / "token")])
    try:
        assert url.startswith("https://")
        services.wait_until(lambda: requests.get(f"{url}/-/healthy", verify=str(cert)).ok, 30, "TLS receiver")
        body = codec.encode(build_v1(batch(3, 5)))
        denied = requests.post(f"{url}/api/v1/write", data=body, headers=V1, verify=str(cert))
        assert denied.status_code == 401
        accepted = requests.post(f"{url}/api/v1/write", data=body, verify=str(cert),
                                 headers={**V1, "Authorization": "Bearer secret-token"})
        assert accepted.status_code == 204
        [message] = subscription.drain(expect=1)
        assert message.data == body
    finally:
        receiver.stop()
