"""`make bench-restore`: the archive's two formats compared, and restore against vmctl, in one run.

1. The same samples (SERIES series x SAMPLES points, node_exporter-like labels, random-walk values) are
   converted by the pipeline's own metric-to-log and written by each archive format's own encoder into
   the Hive layout: bytes per sample, and the time of the same DuckDB query over each.
2. A source VictoriaMetrics is loaded with the same samples (remote write). Then, each into an empty
   VictoriaMetrics: `vmctl vm-native` moves them from the source; `python -m pipeline.restore` writes
   them from the Parquet archive, then from the NDJSON archive. Each is timed wall-clock, process start
   to the last sample stored (VictoriaMetrics' own vm_rows_inserted_total), and the samples/s compared;
   and the mover process's own CPU seconds (user + system, its children included), per 1 M samples: the
   machine may be shared, and CPU time drifts less with its load than wall-clock time does.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import requests

from tests.reference.metric_to_log import convert_v1
from tools import services
from transforms.core.archive.format import FORMATS, partition_parts
from transforms.core.archive.lines import LineBlock
from transforms.core.metadata import MetadataStore
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1

STEP_MS = 15_000
QUERIES = {
    "ndjson": """SELECT name, count(*) AS samples, max(TRY_CAST(coalesce(counter->>'value', gauge->>'value') AS DOUBLE))
FROM read_json('{root}/tenant=*/date=*/hour=*/*.ndjson.gz', format = 'newline_delimited', hive_partitioning = true,
     columns = {{name: 'VARCHAR', tags: 'JSON', timestamp: 'VARCHAR', kind: 'VARCHAR', counter: 'JSON', gauge: 'JSON',
                native_histogram: 'JSON', exemplar: 'JSON', start_timestamp: 'VARCHAR'}})
WHERE tags->>'mode' = 'idle' GROUP BY name ORDER BY name""",
    "parquet": """SELECT name, count(*) AS samples, max(value)
FROM read_parquet('{root}/tenant=*/date=*/hour=*/*.parquet', hive_partitioning = true)
WHERE labels['mode'] = 'idle' GROUP BY name ORDER BY name""",
}


def workload(series: int, samples: int, per_request: int = 1000) -> list:
    """Requests of `per_request` series-samples each, oldest first (as Prometheus would have sent them)."""
    rng = random.Random(7)
    start = (int(time.time()) - samples * STEP_MS // 1000 - 600) * 1000
    labels = [{"__name__": f"bench_cpu_seconds_{i % 20}_total", "instance": f"host-{i // 160}:9100", "job": "node",
               "cpu": str(i // 20 % 8), "mode": ("idle", "user", "system", "iowait")[i % 4]} for i in range(series)]
    values = [rng.uniform(0, 1000) for _ in range(series)]
    out, batch = [], []
    for step in range(samples):
        for i in range(series):
            values[i] += rng.random()
            batch.append(Series(labels[i], [(start + step * STEP_MS, round(values[i], 3))]))
            if len(batch) == per_request:
                out.append(build_v1(batch))
                batch = []
    if batch:
        out.append(build_v1(batch))
    return out


def write_archives(requests_: list, root: Path) -> dict[str, dict]:
    store = MetadataStore()
    records: dict = {}
    for request in requests_:
        for partition, lines in convert_v1(request, "default", store).items():
            records.setdefault(partition, []).append(lines)
    out = {}
    for name, fmt in FORMATS.items():
        started = time.perf_counter()
        size = 0
        for partition, chunks in records.items():
            folder = root / name / Path(*partition_parts(partition))
            folder.mkdir(parents=True, exist_ok=True)
            stored, compression = fmt.file_chunks([fmt.pack(LineBlock.of_records(c)) for c in chunks])
            data = b"".join(stored)
            if compression == "gzip":
                import gzip
                data = gzip.compress(data, 6)
            (folder / fmt.file_name("bench", 0)).write_bytes(data)
            size += len(data)
        out[name] = {"bytes": size, "encode_seconds": round(time.perf_counter() - started, 2)}
    return out


def duckdb_seconds(fmt: str, root: Path, repeat: int = 3) -> tuple[float, list]:
    query = QUERIES[fmt].format(root=root / fmt)
    times, rows = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        rows = duckdb.sql(query).fetchall()
        times.append(time.perf_counter() - started)
    return statistics.median(times), rows


def rows_inserted(vm_url: str) -> int:
    text = requests.get(f"{vm_url}/metrics", timeout=10).text
    return int(sum(float(m) for m in re.findall(r"^vm_rows_inserted_total\{[^}]*\} (\S+)$", text, re.M)))


def children_cpu_seconds() -> float:
    """User + system CPU of the children waited for so far (a running VictoriaMetrics is not among them)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(name: str, argv: list[str], vm_url: str, samples: int, stdin: str | None = None) -> dict:
    started = time.perf_counter()
    cpu_before = children_cpu_seconds()
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=3600)
    cpu = children_cpu_seconds() - cpu_before
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr[-2000:]}")
    services.wait_until(lambda: rows_inserted(vm_url) >= samples, 600, f"{name}: {samples} rows", interval=0.1)
    seconds = time.perf_counter() - started
    result = {"mover": name, "samples": samples, "seconds": round(seconds, 2),
              "samples_per_second": round(samples / seconds), "cpu_seconds": round(cpu, 2),
              "cpu_seconds_per_1m_samples": round(cpu * 1e6 / samples, 2)}
    print(json.dumps(result), flush=True)
    return result


def profile_restore(archive: Path, vm_url: str) -> str:
    from pipeline import restore

    profiler = cProfile.Profile()
    profiler.enable()
    restore.main([f"--archive_path={archive}", f"--remote_write_url={vm_url}/api/v1/write"])
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
    return text.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.restore", description=__doc__)
    parser.add_argument("--series", type=int, default=2000, help="series (default 2000)")
    parser.add_argument("--samples", type=int, default=250, help="points per series, 15 s apart (default 250)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each mover, interleaved (default 3)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile a restore in-process, from each format, into a fresh VictoriaMetrics")
    args = parser.parse_args()
    total = args.series * args.samples
    work = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    log_dir = work / "logs"
    log_dir.mkdir()
    requests_ = workload(args.series, args.samples)
    sizes = write_archives(requests_, work)
    for fmt, info in sizes.items():
        seconds, rows = duckdb_seconds(fmt, work)
        info.update(format=fmt, bytes_per_sample=round(info["bytes"] / total, 2),
                    duckdb_query_seconds=round(seconds, 3), query_rows=len(rows),
                    query_samples=sum(r[1] for r in rows))
        print(json.dumps(info), flush=True)
    source_vm, source = services.start_victoria_metrics(log_dir, name="vm-source")
    try:
        headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}
        with requests.Session() as session:
            for request in requests_:
                session.post(f"{source}/api/v1/write", data=codec.encode(request), headers=headers,
                             timeout=60).raise_for_status()
        services.wait_until(lambda: rows_inserted(source) >= total, 300, "source loaded", interval=0.2)
        requests.get(f"{source}/internal/force_flush", timeout=60)
        runs: dict[str, list[dict]] = {}
        for rep in range(args.repeat):  # interleaved: the machine is shared, so its load drifts
            for mover in ("vmctl vm-native", "restore parquet", "restore ndjson"):
                target, url = services.start_victoria_metrics(log_dir, name=f"vm-{mover.split()[-1]}-{rep}")
                try:
                    if mover.startswith("vmctl"):
                        # vmctl 1.79 insists on a terminal (progress bars) and a confirmation: script(1)'s pty
                        command = f"vmctl vm-native --vm-native-src-addr={source} --vm-native-dst-addr={url}"
                        argv, stdin = ["script", "-qec", command, "/dev/null"], "y\n"
                    else:
                        argv = [sys.executable, "-m", "pipeline.restore", f"--archive_path={work / mover.split()[-1]}",
                                f"--remote_write_url={url}/api/v1/write"]
                        stdin = None
                    runs.setdefault(mover, []).append(timed(mover, argv, url, total, stdin))
                finally:
                    target.stop()
        medians = {m: statistics.median(r["samples_per_second"] for r in rs) for m, rs in runs.items()}
        cpu = {m: statistics.median(r["cpu_seconds_per_1m_samples"] for r in rs) for m, rs in runs.items()}
        base = medians["vmctl vm-native"]
        for mover, rate in medians.items():
            if mover != "vmctl vm-native":
                print(f"{mover}: median {rate:,.0f} samples/s = {rate / base:.2f}x vmctl vm-native "
                      f"(median {base:,.0f} samples/s, {args.repeat} runs each); CPU {cpu[mover]:.2f} s per 1 M "
                      f"samples (vmctl {cpu['vmctl vm-native']:.2f})", flush=True)
        if args.profile:
            for fmt in ("parquet", "ndjson"):
                target, url = services.start_victoria_metrics(log_dir, name=f"vm-profile-{fmt}")
                try:
                    print(f"profile of a restore from {fmt} (top 15 by own time):")
                    print(profile_restore(work / fmt, url))
                finally:
                    target.stop()
    finally:
        source_vm.stop()


if __name__ == "__main__":
    main()
