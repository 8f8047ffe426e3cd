"""SigV4 sink auth, checked the way Amazon Managed Prometheus checks it: a local sink recomputes every
request's signature with botocore's own signer (tests/sigv4_helpers.py) and refuses any mismatch.

The forwarder runs with the production HTTP service; credentials come from the standard AWS chain
(here: environment variables with a session token, so the token header is signed too)."""

from __future__ import annotations

import json

import pytest
from botocore.credentials import Credentials

from pipeline import launcher, restore
from tests.sigv4_helpers import verify, verifying_sink
from transforms.core.protocol import Protocol
from transforms.core.sink import config
from transforms.core.sink.auth import SigV4Auth
from transforms.core.sink.request import headers_for
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1, build_v2
from transforms.io.http_sink import HttpService
from transforms.io.sink_auth import SinkAuthError, check_credentials, sigv4_headers
from transforms.io.sink_driver import Forwarder

KEY = Credentials("AKIDTESTSIGV4EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYTESTSECRET", "session-token-for-tests")
SERIES = 1500  # one sample per series, as Prometheus sends (500-2000 samples per request)
BASE_MS = 1_764_900_000_000


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """The standard chain sees only what the test sets: no shared files, no instance metadata."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.fixture
def aws_keys(aws_env):
    aws_env.setenv("AWS_ACCESS_KEY_ID", KEY.access_key)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", KEY.secret_key)
    aws_env.setenv("AWS_SESSION_TOKEN", KEY.token)
    return aws_env


def series_list(n: int = SERIES) -> list[Series]:
    return [Series({"__name__": "http_requests_total", "instance": f"host-{i % 50}", "path": f"/p{i}"},
                   [(BASE_MS + i, float(i) + 0.5)], metric_type="counter", help="Requests served.") for i in range(n)]


def message_of(request, protocol: Protocol = Protocol.V1) -> tuple[bytes, dict[str, str]]:
    """A Pub/Sub message as the receiver publishes it."""
    return codec.encode(request), codec.message_attributes(protocol, "team-a", "now", codec.count(request))


def delivered(bodies: list[tuple[dict[str, str], bytes]]) -> dict[tuple, list[tuple[int, float]]]:
    """Every (labels) -> [(timestamp, value)] the sink received, in arrival order, 1.0 or 2.0 alike."""
    out: dict[tuple, list[tuple[int, float]]] = {}
    for headers, body in bodies:
        protocol = codec.protocol_for_content_type(headers["Content-Type"])
        message = codec.decode(body, protocol, 1 << 24).message
        for s in message.timeseries:
            if protocol is Protocol.V1:
                labels = tuple((lab.name, lab.value) for lab in s.labels)
            else:
                refs = list(s.labels_refs)
                labels = tuple((message.symbols[refs[i]], message.symbols[refs[i + 1]]) for i in range(0, len(refs), 2))
            out.setdefault(labels, []).extend((p.timestamp, p.value) for p in s.samples)
    return out


def expected(series: list[Series]) -> dict[tuple, list[tuple[int, float]]]:
    return {tuple(sorted(s.labels.items())): list(s.samples) for s in series}


def sigv4_sink(url: str, protocol: str = "1.0", **queue) -> config.SinkConfig:
    return config.from_document(json.dumps({"remote_write": [{
        "url": url, "protocol": protocol, "sigv4": {"region": "us-east-1"},
        "queue_config": {"max_samples_per_send": 2000, **queue}}]}))[0]


def test_verifier_refuses_a_changed_body_a_wrong_key_and_a_wrong_region():
    """The verifying sink can fail: a body changed after signing, another secret, another scope."""
    url = "http://127.0.0.1:9/api/v1/write"
    auth = SigV4Auth(region="us-east-1")
    sink = config.from_flags([url], sigv4_region="us-east-1")[0]
    headers = sigv4_headers(auth, KEY, url, b"body", headers_for(sink, "team-a"))
    received = {**headers, "Host": "127.0.0.1:9"}
    keys = {KEY.access_key: KEY}
    assert verify(received, b"body", "/api/v1/write", keys, "us-east-1", "aps") is None
    assert verify(received, b"bodx", "/api/v1/write", keys, "us-east-1", "aps") == "signature mismatch"
    assert verify({**received, "X-Scope-OrgID": "team-b"}, b"body", "/api/v1/write", keys, "us-east-1",
                  "aps") == "signature mismatch"  # the tenant header is signed
    wrong = {KEY.access_key: Credentials(KEY.access_key, "another-secret", KEY.token)}
    assert verify(received, b"body", "/api/v1/write", wrong, "us-east-1", "aps") == "signature mismatch"
    assert "wrong scope" in verify(received, b"body", "/api/v1/write", keys, "eu-west-1", "aps")


@pytest.mark.parametrize("protocol", ["1.0", "2.0"])
def test_every_request_is_signed_over_the_exact_body_and_delivered(aws_keys, protocol):
    sent = series_list()
    request = build_v1(sent) if protocol == "1.0" else build_v2(sent)
    message = message_of(request, Protocol(protocol))
    with verifying_sink({KEY.access_key: KEY}) as url:
        from tests.sigv4_helpers import VerifyingSink

        sink = sigv4_sink(url, protocol)
        forwarder = Forwarder(sink, service=HttpService(sink))
        try:
            dead = forwarder.forward([message])
        finally:
            forwarder.close()
        seen = list(VerifyingSink.seen)
    assert dead == []
    assert len(seen) >= 1 and [s.problem for s in seen] == [None] * len(seen)
    assert all(s.headers["X-Amz-Security-Token"] == KEY.token for s in seen)
    assert all(s.headers["Content-Type"].endswith("io.prometheus.write.v2.Request") == (protocol == "2.0")
               for s in seen)
    assert delivered([(s.headers, s.body) for s in seen]) == expected(sent)


def test_a_retried_request_is_signed_again_with_a_new_date(aws_keys):
    """The sink answers 503 once; the retry (after >= 1 s of backoff) carries a fresh X-Amz-Date and signature."""
    sent = series_list(1000)
    message = message_of(build_v1(sent))
    with verifying_sink({KEY.access_key: KEY}, answers=[503]) as url:
        from tests.sigv4_helpers import VerifyingSink

        sink = sigv4_sink(url, shards=1, min_backoff="2s", max_backoff="2s")  # equal jitter: waits 1-2 s
        forwarder = Forwarder(sink, service=HttpService(sink))
        try:
            assert forwarder.forward([message]) == []
        finally:
            forwarder.close()
        first, retry = VerifyingSink.seen
    assert first.problem is None and retry.problem is None
    assert first.body == retry.body
    assert first.headers["X-Amz-Date"] < retry.headers["X-Amz-Date"]
    assert first.headers["Authorization"] != retry.headers["Authorization"]
    assert delivered([(retry.headers, retry.body)]) == expected(sent)


def test_missing_credentials_stop_the_launch_with_one_line(aws_env, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        launcher.main(["--input_subscription=projects/proj/subscriptions/input", f"--archive_path={tmp_path}",
                       "--remote_write_url=http://127.0.0.1:9/api/v1/write", "--remote_write_sigv4_region=us-east-1"])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no AWS credentials found" in lines[0] and "sink rw-127-0-0-1-9" in lines[0]
    # the restore job checks the same way before reading any archive
    assert restore.main([f"--archive_path={tmp_path}", "--remote_write_url=http://127.0.0.1:9/api/v1/write",
                         "--remote_write_sigv4_region=us-east-1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("restore: sink rw-127-0-0-1-9-api-v1-write: SigV4: no AWS credentials")
    with pytest.raises(SinkAuthError, match="ProfileNotFound|could not be found"):
        check_credentials(SigV4Auth(region="us-east-1", profile="absent"))


def test_credentials_gone_at_request_time_are_a_final_error_not_a_retry_loop(aws_env):
    """Nothing reaches the sink unsigned; the request is dead-lettered (replayable) after one attempt."""
    message = message_of(build_v1(series_list(10)))
    with verifying_sink({KEY.access_key: KEY}) as url:
        from tests.sigv4_helpers import VerifyingSink

        sink = sigv4_sink(url, shards=1)
        forwarder = Forwarder(sink, service=HttpService(sink))
        try:
            dead = forwarder.forward([message])
        finally:
            forwarder.close()
        assert VerifyingSink.seen == []
    assert forwarder.stats.snapshot()["requests"] == 1
    (record,) = [json.loads(d) for d in dead]
    assert "no AWS credentials found" in record["error"]
    assert record["attributes"]["samples"] == "10" and record["sink"] == sink.name


def test_sigv4_settings_from_flags_and_sinks_file_agree_and_bad_ones_are_named():
    url = "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write"
    arn = "arn:aws:iam::123456789012:role/writer"
    from_flags = config.from_flags([url], sigv4_region="us-east-1", sigv4_role_arn=arn, sigv4_profile="p")[0]
    (from_file,) = config.from_document(json.dumps({"remote_write": [{
        "url": url, "sigv4": {"region": "us-east-1", "service": "aps", "role_arn": arn, "profile": "p"}}]}))
    assert from_flags == from_file
    assert from_flags.auth == SigV4Auth(region="us-east-1", service="aps", role_arn=arn, profile="p")
    for block, error in (({"service": "aps"}, "region is required"),
                         ({"region": "us-east-1", "access_key": "A", "secret_key": "S"}, "standard AWS chain"),
                         ({"region": "us-east-1", "role_arn": "writer"}, "not an IAM role ARN"),
                         ({"region": "US East"}, "not an AWS region"),
                         ({"region": "us-east-1", "sigv4_region": "x"}, "unknown setting")):
        with pytest.raises(config.SinkConfigError, match=error):
            config.from_document(json.dumps({"remote_write": [{"url": url, "sigv4": block}]}))
    with pytest.raises(config.SinkConfigError, match="not both"):
        config.from_document(json.dumps({"remote_write": [{"url": url, "sigv4": {"region": "us-east-1"},
                                                           "bearer_token_file": "/t"}]}))
    with pytest.raises(config.SinkConfigError, match="need --remote_write_sigv4_region"):
        config.from_flags([url], sigv4_service="aps")


def test_a_role_arn_is_assumed_through_sts_and_its_credentials_sign(aws_keys, log_dir):
    """STS is moto's (AWS_ENDPOINT_URL_STS): the chain's keys assume the role; the role's keys sign."""
    from tools import services

    moto, sts_url = services.start_moto(log_dir)
    try:
        aws_keys.setenv("AWS_ENDPOINT_URL_STS", sts_url)
        arn = "arn:aws:iam::123456789012:role/remote-writer"
        check_credentials(SigV4Auth(region="us-east-1", role_arn=arn))
        with verifying_sink({}) as url:
            from tests.sigv4_helpers import VerifyingSink

            sink = config.from_flags([url], sigv4_region="us-east-1", sigv4_role_arn=arn, shards=1)[0]
            service = HttpService(sink)
            role = service._credentials().get_frozen_credentials()
            assert role.access_key != KEY.access_key and role.token
            VerifyingSink.keys = {role.access_key: Credentials(role.access_key, role.secret_key, role.token)}
            forwarder = Forwarder(sink, service=service)
            try:
                assert forwarder.forward([message_of(build_v1(series_list(500)))]) == []
            finally:
                forwarder.close()
            (seen,) = VerifyingSink.seen
        assert seen.problem is None and seen.headers["X-Amz-Security-Token"] == role.token
    finally:
        moto.stop()
