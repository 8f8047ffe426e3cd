"""The DuckDB queries of the README and docs/pipeline.md, run as written against an archive the pipeline's own
writer produced."""

from __future__ import annotations

import duckdb

from tests.readme_helpers import marked_query, write_test_archive


def test_readme_duckdb_example_runs_against_a_pipeline_archive(tmp_path, monkeypatch):
    write_test_archive(tmp_path / "archive")  # the same messages in both formats, side by side
    monkeypatch.chdir(tmp_path)  # the README's path is relative: archive/...
    rows = duckdb.sql(marked_query("duckdb-example")).fetchall()
    by_name = {(row[3], row[2]): row for row in rows}
    assert {row[0] for row in rows} == {"default"}  # WHERE tenant = 'default'
    counter = by_name[("http_requests_total", "09")]
    assert counter[4] == 2 and counter[7] == 5.0  # the stale marker counts as a sample, casts to NULL
    assert counter[5] == "2026-11-25T09:00:00.000Z" and counter[6] == "2026-11-25T09:00:01.000Z"
    assert by_name[("up", "08")][4] == 1  # an hour-old sample, under its own hour

    # The Parquet query answers the same question without JSON functions, on the same archive
    parquet_rows = duckdb.sql(marked_query("duckdb-example-parquet")).fetchall()
    assert len(parquet_rows) == len(rows)
    by_key = {(row[3], row[2]): row for row in parquet_rows}
    for key, ndjson_row in by_name.items():
        row = by_key[key]
        assert row[:5] == ndjson_row[:5] and row[7] == ndjson_row[7]
        assert [t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" for t in row[5:7]] == list(ndjson_row[5:7])
    assert by_key[("http_requests_total", "09")][8] == 1  # the stale marker, found by its special column

    # The metadata companion files: outside the sample queries' globs (their counts above hold), queryable too
    described = duckdb.sql(marked_query("duckdb-example-metadata")).fetchall()
    assert [row[:5] for row in described] == [("default", "http_requests_total", "counter", "Requests served.",
                                               "requests")]
