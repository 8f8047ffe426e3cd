"""The README's DuckDB query, run as written against an archive the pipeline's own writer produced."""

from __future__ import annotations

import re
from pathlib import Path

import apache_beam as beam
import duckdb
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions

from transforms.beam import ArchiveMessages
from transforms.core.protocol import STALE_NAN, Protocol
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_795_597_200_000  # 2026-11-25T09:00:00Z


def readme_query(marker: str = "duckdb-example") -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(rf"<!-- {marker} -->\s*```sql\n(.*?)```", text, re.S).group(1)


def test_readme_duckdb_example_runs_against_a_pipeline_archive(tmp_path, monkeypatch):
    requests = [
        (build_v1([Series({"__name__": "http_requests_total", "job": "api"}, [(T0, 5.0), (T0 + 1000, STALE_NAN)])],
                  metadata=[Series({"__name__": "http_requests_total"}, metric_type="counter",
                                   help="Requests served.", unit="requests")]), "default"),
        (build_v1([Series({"__name__": "up", "job": "node"}, [(T0 - 3_600_000, 1.0)])]), "default"),
        (build_v1([Series({"__name__": "up", "job": "other"}, [(T0, 1.0)])]), "team-b"),
    ]
    messages = [PubsubMessage(codec.encode(m), codec.message_attributes(Protocol.V1, t, "x", codec.count(m)),
                              message_id=str(i)) for i, (m, t) in enumerate(requests)]
    for archive_format in ("ndjson", "parquet"):  # the same messages in both formats, side by side
        with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
            _ = (p | beam.Create(messages) | ArchiveMessages(str(tmp_path / "archive"), str(tmp_path / "dead"),
                                                             file_label=lambda window, pane: "readme",
                                                             archive_format=archive_format))
    monkeypatch.chdir(tmp_path)  # the README's path is relative: archive/...
    rows = duckdb.sql(readme_query()).fetchall()
    by_name = {(row[3], row[2]): row for row in rows}
    assert {row[0] for row in rows} == {"default"}  # WHERE tenant = 'default'
    counter = by_name[("http_requests_total", "09")]
    assert counter[4] == 2 and counter[7] == 5.0  # the stale marker counts as a sample, casts to NULL
    assert counter[5] == "2026-11-25T09:00:00.000Z" and counter[6] == "2026-11-25T09:00:01.000Z"
    assert by_name[("up", "08")][4] == 1  # an hour-old sample, under its own hour

    # The Parquet query answers the same question without JSON functions, on the same archive
    parquet_rows = duckdb.sql(readme_query("duckdb-example-parquet")).fetchall()
    assert len(parquet_rows) == len(rows)
    by_key = {(row[3], row[2]): row for row in parquet_rows}
    for key, ndjson_row in by_name.items():
        row = by_key[key]
        assert row[:5] == ndjson_row[:5] and row[7] == ndjson_row[7]
        assert [t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" for t in row[5:7]] == list(ndjson_row[5:7])
    assert by_key[("http_requests_total", "09")][8] == 1  # the stale marker, found by its special column

    # The metadata companion files: outside the sample queries' globs (their counts above hold), queryable too
    described = duckdb.sql(readme_query("duckdb-example-metadata")).fetchall()
    assert [row[:5] for row in described] == [("default", "http_requests_total", "counter", "Requests served.",
                                               "requests")]
