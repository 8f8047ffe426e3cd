"""The reader over an archive in S3 (moto in server mode) and in GCS (the GCS emulator): the same answers as
over the same files on disk.

pyarrow's S3 filesystem takes the endpoint from AWS_ENDPOINT_URL, as boto3 does; the reader points pyarrow's
GCS filesystem at STORAGE_EMULATOR_HOST, as the Google Cloud client libraries do.
"""

from __future__ import annotations

import boto3
import pytest
import snappy

from reader.app import create_app
from reader.config import ReaderConfig
from tests.read_helpers import read_frames, write_archive
from tools import services
from transforms.core.read.matchers import EQ, RE
from transforms.core.read.request import STREAMED_XOR_CHUNKS
from transforms.core.wire.builders import Series, build_v1
from transforms.core.wire.proto import remote_read_pb2

T0 = 1_795_597_200_000  # 2026-11-25T09:00:00Z


@pytest.fixture()
def s3_endpoint(tmp_path, monkeypatch):
    moto, url = services.start_moto(tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    try:
        yield url
    finally:
        moto.stop()


def _body(accepted=()) -> bytes:
    request = remote_read_pb2.ReadRequest(accepted_response_types=list(accepted), queries=[remote_read_pb2.Query(
        start_timestamp_ms=T0, end_timestamp_ms=T0 + 7_200_000, matchers=[
            remote_read_pb2.LabelMatcher(type=EQ, name="__name__", value="requests_total"),
            remote_read_pb2.LabelMatcher(type=RE, name="job", value="j1.")])])
    return snappy.compress(request.SerializeToString())


def _archive(tmp_path):
    series = [Series({"__name__": "requests_total", "job": f"j{j}"},
                     [(T0 + 3_000_000 + i * 15_000, float(i + j)) for i in range(200)]) for j in range(30)]
    local = tmp_path / "archive"
    files = write_archive(local, build_v1(series), counter_names={"requests_total": "counter"})
    assert len(files) == 2  # the samples span two hours
    return local, files


def _answers(roots: dict[str, str]) -> dict[str, tuple[bytes, bytes]]:
    answers = {}
    for name, root in roots.items():
        client = create_app(ReaderConfig(archive_path=root)).test_client()
        assert client.get("/-/ready").status_code == 200, name
        samples = client.post("/api/v1/read", data=_body())
        streamed = client.post("/api/v1/read", data=_body([STREAMED_XOR_CHUNKS]))
        assert samples.status_code == 200 and streamed.status_code == 200, name
        answers[name] = (snappy.decompress(samples.data), streamed.data)
    return answers


def _check(answer: tuple[bytes, bytes]) -> None:
    result = remote_read_pb2.ReadResponse.FromString(answer[0]).results[0]
    assert len(result.timeseries) == 10 and all(len(s.samples) == 200 for s in result.timeseries)
    assert sum(len(f.chunked_series) for f in read_frames(answer[1])) == 10


def test_s3_archive_answers_like_local(tmp_path, s3_endpoint):
    local, files = _archive(tmp_path)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="archive-bucket")
    for path in files:
        s3.upload_file(str(path), "archive-bucket", f"prefix/{path.relative_to(local)}")
    answers = _answers({"local": str(local), "s3": "s3://archive-bucket/prefix"})
    assert answers["s3"] == answers["local"]
    _check(answers["s3"])
    missing = create_app(ReaderConfig(archive_path="s3://archive-bucket/nothing")).test_client()
    assert missing.get("/-/ready").status_code == 503


def test_gcs_archive_answers_like_local(tmp_path, gcs):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    local, files = _archive(tmp_path)
    bucket = storage.Client(project="local-project", credentials=AnonymousCredentials()).bucket("archive-bucket")
    for path in files:
        bucket.blob(f"reader/{path.relative_to(local)}").upload_from_filename(str(path))
    answers = _answers({"local": str(local), "gs": "gs://archive-bucket/reader"})
    assert answers["gs"] == answers["local"]
    _check(answers["gs"])
    missing = create_app(ReaderConfig(archive_path="gs://archive-bucket/nothing")).test_client()
    assert missing.get("/-/ready").status_code == 503
