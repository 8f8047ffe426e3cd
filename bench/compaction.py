"""`python -m bench.compaction`: the compacted files' row-group size, measured.

One synthetic hour (SERIES series x 240 samples: 15 s scrapes; 100 metric names, 3 labels each) is sorted
as the compaction sorts it, then written with each row-group size. For each: the file's size, the write
time, and the median time of three reads: one metric over the hour (what a dashboard panel or a
remote_read query asks: pyarrow with a name filter, and DuckDB), one metric over 5 minutes, and a scan of
the whole hour (DuckDB, count and max by name).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.core.archive import compaction
from transforms.core.archive.parquet import SCHEMA

HOUR_START_MS = 1_795_593_600_000  # 2026-11-25T08:00:00Z
POINTS = 240


def hour_table(series: int) -> pa.Table:
    rows = series * POINTS
    series_of_row = np.repeat(np.arange(series), POINTS)
    rng = np.random.default_rng(1)
    names = pa.array([f"metric_{s % 100:03d}_total" for s in range(series)]).take(pa.array(series_of_row))
    labels = pa.array([[("instance", f"host-{s // 100}:9100"), ("job", f"job-{s % 7}"), ("mode", f"m{s % 5}")]
                       for s in range(series)], SCHEMA.field("labels").type).take(pa.array(series_of_row))
    stamps = HOUR_START_MS + np.tile(np.arange(POINTS) * 15_000, series) + rng.integers(0, 1000, rows)
    columns = {"name": names, "labels": labels, "timestamp": pa.array(stamps).cast(SCHEMA.field("timestamp").type),
               "value": pa.array(np.cumsum(rng.random(rows))), "type": pa.array(np.full(rows, "counter"))}
    shuffled = pa.table([columns.get(f.name, pa.nulls(rows, f.type)) for f in SCHEMA], schema=SCHEMA)
    return shuffled.take(pa.array(rng.permutation(rows)))  # as the window files hold it: interleaved


def timed(action) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--row_groups", default="65536,131072,1048576")
    args = parser.parse_args()
    table = hour_table(args.series)
    started = time.perf_counter()
    ordered = compaction.compact_table([table])
    print(f"{len(table):,} rows; sort {time.perf_counter() - started:.2f} s, "
          f"table {ordered.nbytes / 2**20:.0f} MiB in memory")
    with tempfile.TemporaryDirectory() as folder:
        for size in (int(s) for s in args.row_groups.split(",")):
            measure(ordered, Path(folder) / f"rg{size}.parquet", size)


def measure(ordered: pa.Table, path: Path, size: int) -> None:
    name, five_min = "metric_042_total", "TIMESTAMP '2026-11-25 08:30:00+00' AND TIMESTAMP '2026-11-25 08:35:00+00'"
    started = time.perf_counter()
    [data] = compaction.compacted_files(ordered, rows_per_file=len(ordered), row_group_rows=size)
    path.write_bytes(data)
    write_s = time.perf_counter() - started
    one = timed(lambda: pq.read_table(path, columns=["name", "labels", "timestamp", "value"],
                                      filters=[("name", "=", name)]))
    con = duckdb.connect()
    source = f"read_parquet('{path}')"
    one_sql = timed(lambda: con.sql(f"SELECT labels, timestamp, value FROM {source} WHERE name = '{name}'").fetchall())
    count = timed(lambda: con.sql(f"SELECT count(*), max(value) FROM {source} WHERE name = '{name}'").fetchall())
    window = timed(lambda: con.sql(f"SELECT count(*) FROM {source} WHERE name = '{name}' "
                                   f"AND timestamp BETWEEN {five_min}").fetchall())
    scan = timed(lambda: con.sql(f"SELECT name, count(*), max(value) FROM {source} GROUP BY name").fetchall())
    print(f"row groups of {size:>9,}: {pq.ParquetFile(path).num_row_groups:3d} groups, {len(data) / 2**20:6.1f} MiB, "
          f"write {write_s:5.2f} s; one metric with labels: pyarrow {one * 1000:6.1f} ms, DuckDB {one_sql * 1000:6.1f} "
          f"ms; one metric count+max {count * 1000:6.1f} ms; one metric 5 min {window * 1000:6.1f} ms; "
          f"whole-hour scan {scan * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
