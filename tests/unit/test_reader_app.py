"""The reader app over a real (temporary) Parquet archive, through Flask's test client."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import snappy

from reader.app import create_app
from reader.config import ReaderConfig, parse_config
from reader.metrics import ReaderMetrics
from tests.read_helpers import decode_xor_chunk, read_frames, write_archive
from transforms.core.archive import parquet
from transforms.core.protocol import STALE_NAN, float_bits
from transforms.core.read.matchers import EQ, RE
from transforms.core.read.request import STREAMED_XOR_CHUNKS
from transforms.core.wire.builders import Series, build_v1
from transforms.core.wire.proto import remote_read_pb2

T0 = 1_795_597_200_000  # 2026-11-25T09:00:00Z
JOBS = 20
POINTS = 100  # 2,000 samples per metric, across two hours


def _archive(root):
    series = []
    for job in range(JOBS):
        points = [(T0 + 3_540_000 + i * 1000, float(i * job)) for i in range(POINTS)]
        if job == 0:
            points[-1] = (points[-1][0], STALE_NAN)
        series.append(Series({"__name__": "requests_total", "job": f"j{job:02d}"}, points))
        series.append(Series({"__name__": "other", "job": f"j{job:02d}"}, points))
    write_archive(root, build_v1(series), counter_names={"requests_total": "counter"})
    write_archive(root, build_v1(series[:2]), tenant="team-b")


def _client(tmp_path, **limits):
    _archive(tmp_path)
    metrics = ReaderMetrics()
    app = create_app(ReaderConfig(archive_path=str(tmp_path), **limits), metrics)
    return app.test_client(), metrics


def _read(client, queries, accepted=(), headers=None):
    request = remote_read_pb2.ReadRequest(accepted_response_types=list(accepted), queries=[
        remote_read_pb2.Query(start_timestamp_ms=start, end_timestamp_ms=end, matchers=[
            remote_read_pb2.LabelMatcher(type=k, name=n, value=v) for k, n, v in matchers])
        for start, end, matchers in queries])
    return client.post("/api/v1/read", data=snappy.compress(request.SerializeToString()),
                       headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                                **(headers or {})})


def _samples(response) -> list[remote_read_pb2.QueryResult]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Encoding"] == "snappy"
    return list(remote_read_pb2.ReadResponse.FromString(snappy.decompress(response.get_data())).results)


def test_samples_over_two_hours_with_several_queries(tmp_path):
    client, metrics = _client(tmp_path)
    end = T0 + 3_540_000 + POINTS * 1000
    results = _samples(_read(client, [
        (T0, end, [(EQ, "__name__", "requests_total"), (RE, "job", "j0[0-4]")]),
        (T0 + 3_600_000, end, [(RE, "__name__", "other|none")]),
    ]))
    first, second = results
    assert [dict((lb.name, lb.value) for lb in s.labels)["job"] for s in first.timeseries] == \
        ["j00", "j01", "j02", "j03", "j04"]
    assert all(len(s.samples) == POINTS for s in first.timeseries)
    assert float_bits(first.timeseries[0].samples[-1].value) == float_bits(STALE_NAN)
    assert [s.value for s in first.timeseries[3].samples[:3]] == [0.0, 3.0, 6.0]
    assert len(second.timeseries) == JOBS and all(len(s.samples) == 40 for s in second.timeseries)
    assert metrics.samples._value.get() == 5 * POINTS + JOBS * 40


def test_streamed_chunks_answer_the_same(tmp_path):
    client, _ = _client(tmp_path)
    query = [(T0, T0 + 7_200_000, [(EQ, "__name__", "requests_total"), (EQ, "job", "j00")])]
    response = _read(client, query, accepted=[STREAMED_XOR_CHUNKS])
    assert response.status_code == 200
    assert response.headers["Content-Type"] == \
        "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
    (frame,) = read_frames(response.get_data())
    (series,) = frame.chunked_series
    points = [p for chunk in series.chunks for p in decode_xor_chunk(chunk.data)]
    expected = _samples(_read(client, query))[0].timeseries[0].samples
    assert points == [(s.timestamp, float_bits(s.value)) for s in expected]


def test_streamed_chunks_are_written_frame_by_frame_within_the_byte_limit(tmp_path):
    """Within the byte limit, the frames are written one by one (a generator: no Content-Length); past it, 422."""
    query = [(T0, T0 + 7_200_000, [(RE, "__name__", ".+")]), (T0, T0 + 3_600_000, [(EQ, "__name__", "other")])]
    client, _ = _client(tmp_path)
    streamed = _read(client, query, accepted=[STREAMED_XOR_CHUNKS])
    assert streamed.status_code == 200 and "Content-Length" not in streamed.headers  # a generator's body
    body = streamed.get_data()
    assert [f.query_index for f in read_frames(body)] == [0, 1]
    exact, _ = _client(tmp_path / "exact", max_bytes_per_response=len(body))
    assert _read(exact, query, accepted=[STREAMED_XOR_CHUNKS]).get_data() == body
    over, _ = _client(tmp_path / "over", max_bytes_per_response=len(body) - 1)
    assert _read(over, query, accepted=[STREAMED_XOR_CHUNKS]).status_code == 422


@pytest.mark.parametrize("accepted", [[], [STREAMED_XOR_CHUNKS]])
def test_a_request_past_the_byte_limit_stops_reading_its_queries(tmp_path, accepted):
    """Each query is encoded and counted against --max-bytes-per-response before the next is read, so a
    request of many queries holds at most the limit, not every query's samples."""
    query = [(T0, T0 + 7_200_000, [(RE, "__name__", ".+")])]
    client, _ = _client(tmp_path)
    one = len(_read(client, query, accepted=accepted).get_data())
    many, metrics = _client(tmp_path / "many", max_bytes_per_response=2 * one)
    response = _read(many, query * 20, accepted=accepted)
    assert response.status_code == 422 and "--max-bytes-per-response" in response.get_json()["error"]
    assert metrics.queries._value.get() <= 4  # not all 20 read


def test_tenants_are_separate(tmp_path):
    client, _ = _client(tmp_path)
    query = [(T0, T0 + 7_200_000, [(RE, "__name__", ".+")])]
    assert len(_samples(_read(client, query, headers={"X-Scope-OrgID": "team-b"}))[0].timeseries) == 2
    assert len(_samples(_read(client, query, headers={"X-Scope-OrgID": "nobody"}))[0].timeseries) == 0
    bad = _read(client, query, headers={"X-Scope-OrgID": "../etc"})
    assert bad.status_code == 400 and "not a valid tenant" in bad.get_json()["error"]


def test_limits_are_clear_4xx(tmp_path):
    client, _ = _client(tmp_path, max_samples_per_query=999)
    query = [(T0, T0 + 7_200_000, [(EQ, "__name__", "other")])]
    response = _read(client, query)
    assert response.status_code == 422 and "--max-samples-per-query" in response.get_json()["error"]
    small = [(T0, T0 + 7_200_000, [(EQ, "__name__", "other"), (EQ, "job", "j01")])]
    assert len(_samples(_read(client, small))[0].timeseries) == 1
    client, _ = _client(tmp_path / "again", max_bytes_per_response=2_000)
    response = _read(client, query, accepted=[STREAMED_XOR_CHUNKS])
    assert response.status_code == 422 and "--max-bytes-per-response" in response.get_json()["error"]


def test_bad_requests(tmp_path):
    client, _ = _client(tmp_path)
    assert client.post("/api/v1/read", data=b"not snappy").status_code == 400
    unknown = _read(client, [(0, 1, [])], accepted=[7])
    assert unknown.status_code == 400 and "accepted response types" in unknown.get_json()["error"]
    assert client.get("/api/v1/read").status_code == 405


def test_row_groups_are_pruned_by_name(tmp_path):
    """A file of many small row groups: a pinned name reads only the groups whose statistics allow it."""
    from tests.reference import metric_to_log
    from transforms.core.metadata import MetadataStore

    series = [Series({"__name__": f"m{n:02d}", "job": "a"}, [(T0 + i * 1000, float(i)) for i in range(100)])
              for n in range(30)]
    (lines,) = metric_to_log.convert_v1(build_v1(series), "default", MetadataStore()).values()
    folder = tmp_path / "tenant=default" / "date=2026-11-25" / "hour=09"
    folder.mkdir(parents=True)
    # written as parquet.write_bytes writes the archive (no stored Arrow schema, so `name` reads as a plain
    # string: pyarrow 25 ignores the statistics of a column that reads as a dictionary)
    pq.write_table(parquet.encode_table(lines), folder / "part.parquet", row_group_size=100, store_schema=False,
                   use_dictionary=parquet.DICTIONARY_COLUMNS)
    metrics = ReaderMetrics()
    client = create_app(ReaderConfig(archive_path=str(tmp_path)), metrics).test_client()
    (result,) = _samples(_read(client, [(T0, T0 + 3_599_999, [(EQ, "__name__", "m07")])]))
    assert len(result.timeseries) == 1 and len(result.timeseries[0].samples) == 100
    assert metrics.rows._value.get() == 100
    # 1 of 30 row groups read: the footer and that group's chunks of the six read columns
    meta = pq.ParquetFile(folder / "part.parquet").metadata
    group = next(meta.row_group(g) for g in range(meta.num_row_groups)
                 if meta.row_group(g).column(0).statistics.min == "m07")
    read = ("name", "labels", "timestamp", "value", "special", "type")
    chunks = sum(group.column(c).total_compressed_size for c in range(group.num_columns)
                 if group.column(c).path_in_schema.split(".")[0] in read)
    assert metrics.bytes_read._value.get() == meta.serialized_size + 8 + chunks
    (result,) = _samples(_read(client, [(T0 + 10_000, T0 + 19_999, [(RE, "__name__", "m0.")])]))
    assert [len(s.samples) for s in result.timeseries] == [10] * 10
    # every group's series are known now: the same regex again reads only the ten groups holding m0x, and
    # only their time, value, special and type chunks
    before = metrics.bytes_read._value.get()
    (again,) = _samples(_read(client, [(T0 + 10_000, T0 + 19_999, [(RE, "__name__", "m0.")])]))
    assert again == result
    groups = [meta.row_group(g) for g in range(meta.num_row_groups)
              if meta.row_group(g).column(0).statistics.min.startswith("m0")]
    assert len(groups) == 10
    assert metrics.bytes_read._value.get() - before == sum(
        group.column(c).total_compressed_size for group in groups for c in range(group.num_columns)
        if group.column(c).path_in_schema in ("timestamp", "value", "special", "type"))


def test_bytes_read_are_the_footer_and_the_read_columns_of_the_unpruned_row_groups(tmp_path):
    """reader_bytes_read_total: a time range inside one of ten row groups (cut by time) counts that group's
    chunks of the six read columns (labels is a map: two leaves) and the footer, not the whole file."""
    from tests.reference import metric_to_log
    from transforms.core.metadata import MetadataStore

    series = [Series({"__name__": "m", "job": "a"}, [(T0 + i * 1000, float(i)) for i in range(1000)])]
    (lines,) = metric_to_log.convert_v1(build_v1(series), "default", MetadataStore()).values()
    folder = tmp_path / "tenant=default" / "date=2026-11-25" / "hour=09"
    folder.mkdir(parents=True)
    path = folder / "part.parquet"
    pq.write_table(parquet.encode_table(lines), path, row_group_size=100)
    metrics = ReaderMetrics()
    client = create_app(ReaderConfig(archive_path=str(tmp_path)), metrics).test_client()
    (result,) = _samples(_read(client, [(T0 + 310_000, T0 + 320_000, [(EQ, "__name__", "m")])]))
    assert len(result.timeseries[0].samples) == 11
    meta = pq.ParquetFile(path).metadata
    group = meta.row_group(3)  # rows 300..399
    read = ("name", "labels", "timestamp", "value", "special", "type")
    chunks = [group.column(c) for c in range(group.num_columns) if group.column(c).path_in_schema.split(".")[0] in read]
    assert len(chunks) == 7 and len(chunks) < group.num_columns
    group_bytes = sum(c.total_compressed_size for c in chunks)
    assert metrics.bytes_read._value.get() == meta.serialized_size + 8 + group_bytes
    assert metrics.bytes_read._value.get() < path.stat().st_size
    # the footer and the group's series are cached: the same query again fetches only the group's time, value,
    # special and type chunks (not name, not labels); a file written anew is read anew
    values = sum(c.total_compressed_size for c in chunks if c.path_in_schema in ("timestamp", "value", "special",
                                                                                 "type"))
    (again,) = _samples(_read(client, [(T0 + 310_000, T0 + 320_000, [(EQ, "__name__", "m")])]))
    assert again == result
    assert metrics.bytes_read._value.get() == meta.serialized_size + 8 + group_bytes + values
    pq.write_table(parquet.encode_table(lines[:500]), path, row_group_size=50)
    (result,) = _samples(_read(client, [(T0 + 310_000, T0 + 320_000, [(EQ, "__name__", "m")])]))
    assert len(result.timeseries[0].samples) == 11
    assert metrics.bytes_read._value.get() > meta.serialized_size + 8 + group_bytes + values + pq.ParquetFile(
        path).metadata.serialized_size


def test_health_ready_metrics(tmp_path):
    client, _ = _client(tmp_path)
    assert client.get("/-/healthy").status_code == 200
    assert client.get("/-/ready").status_code == 200
    _read(client, [(T0, T0 + 1, [(EQ, "__name__", "up")])])
    assert b'reader_requests_total{code="200",response_type="samples"} 1.0' in client.get("/metrics").data
    missing = create_app(ReaderConfig(archive_path=str(tmp_path / "nothing"))).test_client()
    assert missing.get("/-/ready").status_code == 503


def test_config_from_the_environment(monkeypatch):
    monkeypatch.setenv("READER_ARCHIVE_PATH", "/archive")
    monkeypatch.setenv("READER_MAX_SAMPLES_PER_QUERY", "77")
    config = parse_config(["--port=9999"])
    assert (config.archive_path, config.max_samples_per_query, config.port) == ("/archive", 77, 9999)


def test_config_errors_are_clear(capsys):
    with pytest.raises(SystemExit, match="--archive-path is required"):
        parse_config([])
    assert parse_config(["--archive_path=/x", "--max-samples-per-query=5"]).max_samples_per_query == 5
    with pytest.raises(SystemExit, match="must be positive"):
        parse_config(["--archive-path=/x", "--max-bytes-per-response=0"])


def test_native_histograms_are_refused_with_a_422_and_floats_beside_them_still_served(tmp_path):
    from tests.archive_samples import sample_request

    write_archive(tmp_path, sample_request(), counter_names={"requests_total": "counter"})
    client = create_app(ReaderConfig(archive_path=str(tmp_path))).test_client()
    refused = _read(client, [(T0 - 1, T0 + 10_000, [(RE, "__name__", ".+")])])
    assert refused.status_code == 422  # "lat" holds native histograms: refused, never silently left out
    message = refused.get_data(as_text=True)
    assert "native histograms" in message and 'lat{' in message and "__name__" in message
    (result,) = _samples(_read(client, [(T0 - 1, T0 + 10_000, [(RE, "__name__", "requests_total|up")])]))
    names = sorted({lb.value for s in result.timeseries for lb in s.labels if lb.name == "__name__"})
    assert names == ["requests_total", "up"]
    stamps = [s.timestamp for s in result.timeseries[0].samples]
    assert stamps == sorted(stamps) and len(stamps) == 5


def test_corrupt_file_fails_the_query_with_its_reason(tmp_path):
    client, _ = _client(tmp_path)
    (tmp_path / "tenant=default" / "date=2026-11-25" / "hour=09" / "broken.parquet").write_bytes(b"PAR1 no")
    response = _read(client, [(T0, T0 + 3_600_000, [(EQ, "__name__", "other")])])
    assert response.status_code == 500 and "unreadable" in response.get_json()["error"]


def test_credentials_are_required_when_configured(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    _archive(tmp_path)
    client = create_app(ReaderConfig(archive_path=str(tmp_path), bearer_token_file=str(token))).test_client()
    query = [(T0, T0 + 7_200_000, [(EQ, "__name__", "other"), (EQ, "job", "j01")])]
    refused = _read(client, query)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert len(_samples(_read(client, query, headers={"Authorization": "Bearer s3cret"}))[0].timeseries) == 1


def test_a_range_from_the_epoch_lists_only_existing_folders(tmp_path):
    client, metrics = _client(tmp_path)
    (tmp_path / "tenant=default" / "not-a-partition").mkdir()
    (result,) = _samples(_read(client, [(0, 2**62, [(EQ, "__name__", "other")])]))
    assert len(result.timeseries) == JOBS and all(len(s.samples) == POINTS for s in result.timeseries)
    assert metrics.files._value.get() == 2  # the two hour files; nothing else opened


def test_unknown_special_value_fails_the_query_with_its_reason(tmp_path):
    import pyarrow as pa

    client, _ = _client(tmp_path)
    path = tmp_path / "tenant=default" / "date=2026-11-25" / "hour=09" / "part-0.parquet"
    table = pq.read_table(path)
    special = pa.array(["Bogus"] * len(table), pa.string())
    pq.write_table(table.set_column(table.schema.get_field_index("special"), "special", special), path)
    response = _read(client, [(T0, T0 + 3_600_000, [(EQ, "__name__", "other")])])
    assert response.status_code == 500 and "unknown special value 'Bogus'" in response.get_json()["error"]


def test_series_cache_keeps_groups_by_weight_and_shares_labels():
    """Row groups' series are dropped least recently used first past the cache's weight (local series plus
    runs), and a series held by two groups keeps one copy of its labels."""
    from transforms.core.read.select import COLUMNS, group_series
    from transforms.io.archive_cache import SeriesCache

    table = parquet.encode_table(
        [json.dumps({"name": "m", "tags": {"job": j}, "timestamp": f"2026-11-25T09:00:0{i}.000Z", "kind": "absolute",
                     "gauge": {"value": i}}) for j in ("a", "b") for i in range(3)]).select(COLUMNS)
    cache = SeriesCache(capacity=8)
    first = cache.put(("f", 1, 0, 0), group_series(table))
    assert first.ids().tolist() == [0, 0, 0, 1, 1, 1] and first.run_starts.tolist() == [0, 3]  # weight 2 + 2
    second = cache.put(("f", 1, 0, 1), group_series(table))
    assert second.labels[0] is first.labels[0] and second.keys[1] is first.keys[1]
    assert cache.get(("f", 1, 0, 0)) is first  # now the most recently used
    cache.put(("g", 1, 0, 0), group_series(table))  # weight 12 > 8: the least recently used group goes
    assert cache.get(("f", 1, 0, 1)) is None and cache.get(("f", 1, 0, 0)) is first


def test_footer_cache_keeps_footers_by_stored_bytes(tmp_path):
    """Footers are dropped least recently used first past the cache's stored bytes; a dropped one is fetched
    (and counted) again."""
    import pyarrow.fs as pafs

    from transforms.core.read.select import COLUMNS
    from transforms.io.archive_cache import FooterCache

    table = parquet.encode_table([json.dumps({"name": "m", "tags": {}, "timestamp": "2026-11-25T09:00:00.000Z",
                                              "kind": "absolute", "gauge": {"value": 1}})])
    paths = []
    for n in range(3):
        paths.append(tmp_path / f"f{n}.parquet")
        pq.write_table(table, paths[-1])
    filesystem = pafs.LocalFileSystem()
    infos = filesystem.get_file_info([str(p) for p in paths])
    size = pq.ParquetFile(paths[0]).metadata.serialized_size + 8
    cache = FooterCache(filesystem, COLUMNS, capacity=2 * size)
    assert [cache.get(info)[1] for info in infos] == [True, True, True]  # the third drops the first
    assert [cache.get(info)[1] for info in infos[1:]] == [False, False]
    assert cache.get(infos[0])[1] is True
