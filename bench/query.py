"""`make bench-query`: PromQL over the archive (Prometheus 2.42 + remote_read + the reader), before and after
compaction, against Prometheus' own TSDB and VictoriaMetrics, on the same data.

The data (bench/query_data.py): SERIES series (20 per target, five jobs: counters, gauges, a classic
histogram, a job whose series end with stale markers) scraped every 15 s for MINUTES, ending at the last
whole hour. The same remote-write bodies go into (bench/query_load.py):

- `prometheus`: a Prometheus 2.42 opening the block its own TSDB wrote of them (a snapshot);
- `victoriametrics`: VictoriaMetrics 1.79 (remote write; -search.disableCache, so repetitions are computed
  again, as Prometheus computes them);
- `reader-uncompacted`: the archive as the pipeline writes it (one Parquet file per window and hour), read
  by `python -m reader`, queried through a Prometheus 2.42 with an empty TSDB and `remote_read` (read_recent);
- `reader-compacted`: a copy of that archive after `python -m pipeline.compact`, read the same way.

Then each query of bench/query_measure.py, instant and range, on each backend: p50 and p99 latency, CPU
per query of the serving processes (Prometheus + reader for the remote-read setups), bytes the reader read,
and whether the answer equals Prometheus' (the readers must match exactly; VictoriaMetrics' MetricsQL
differs by design for some functions, reported, not failed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path

from bench.query_data import TYPES, Workload
from bench.query_load import compacted_copy, load_victoria_metrics, prometheus_block, write_archive
from bench.query_measure import KINDS, QUERIES, Backend, Figure, measure
from tools import services

HOUR_MS = 3_600_000
REFERENCE = "prometheus"
BACKENDS = (REFERENCE, "victoriametrics", "reader-uncompacted", "reader-compacted")
GOAL = "reader-compacted"


@dataclasses.dataclass
class Report:
    workload: Workload
    series: int
    samples: int
    archive_files: int
    compaction: str
    setup_seconds: dict[str, float]
    figures: list[Figure]

    def figure(self, backend: str, query: str, kind: str) -> Figure:
        return next(f for f in self.figures if (f.backend, f.query, f.kind) == (backend, query, kind))

    def ratios(self, backend: str, field: str) -> list[float]:
        """backend / Prometheus per query and kind, for p50_ms or cpu_ms."""
        out = []
        for query in QUERIES:
            for kind in KINDS:
                base = getattr(self.figure(REFERENCE, query, kind), field)
                out.append(getattr(self.figure(backend, query, kind), field) / base if base > 0 else math.nan)
        return out

    def disagreements(self, exact_only: bool = True) -> list[Figure]:
        return [f for f in self.figures if f.agrees is False and (not exact_only or f.backend.startswith("reader"))]


def geometric_mean(values: list[float]) -> float:
    finite = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, finite)) / len(finite)) if finite else math.nan


def default_start_ms(minutes: float, step_ms: int = 15_000) -> int:
    """The data ends at the last whole hour, so its hour partitions are closed and can be compacted."""
    end = int(time.time() * 1000) // HOUR_MS * HOUR_MS
    return end - int(minutes * 60_000) // step_ms * step_ms


def reading_prometheus(log_dir: Path, name: str, reader_url: str) -> tuple[services.Service, str]:
    config = f"""
global: {{scrape_interval: 1m}}
remote_read:
  - url: {reader_url}/api/v1/read
    read_recent: true
    remote_timeout: 5m
"""
    return services.start_prometheus(log_dir, config, name=name)


def run(series: int, minutes: float, reps: int, work: Path, window_s: int = 60, step_s: int = 30,
        start_ms: int | None = None, progress: bool = True) -> Report:
    workload = Workload.of(series, minutes, start_ms or default_start_ms(minutes))
    log_dir = work / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def timed(what: str, started: float) -> None:
        timings[what] = round(time.perf_counter() - started, 1)
        if progress:
            print(f"{what}: {timings[what]} s", flush=True)

    started = time.perf_counter()
    bodies = list(workload.bodies())
    timed("generate", started)
    started = time.perf_counter()
    tsdb = prometheus_block(log_dir, bodies)
    timed("prometheus load + snapshot", started)
    started = time.perf_counter()
    archive_files = write_archive(work / "archive", bodies, TYPES, window_s)
    timed("archive write", started)
    started = time.perf_counter()
    before_ms = -(-workload.end_ms // HOUR_MS) * HOUR_MS  # the end of the data's last hour
    compaction = compacted_copy(work / "archive", work / "archive-compacted", before_ms, log_dir)
    timed("compaction", started)
    started_services: list[services.Service] = []
    try:
        prometheus, prometheus_url = services.start_prometheus(log_dir, "global: {scrape_interval: 1m}\n",
                                                               name="prometheus", data_dir=tsdb)
        started_services.append(prometheus)
        vm, vm_url = services.start_victoria_metrics(log_dir, args=["-search.disableCache"])
        started_services.append(vm)
        started = time.perf_counter()
        load_victoria_metrics(vm_url, bodies, workload.samples())
        timed("victoriametrics load", started)
        del bodies
        backends = [Backend(REFERENCE, prometheus_url, [prometheus.pid]),
                    Backend("victoriametrics", vm_url, [vm.pid], exact=False)]
        for name, archive in (("reader-uncompacted", "archive"), ("reader-compacted", "archive-compacted")):
            reader, reader_url = services.start_reader(log_dir, str(work / archive))
            started_services.append(reader)
            reading, reading_url = reading_prometheus(log_dir, f"prometheus-{name}", reader_url)
            started_services.append(reading)
            backends.append(Backend(name, reading_url, [reading.pid, reader.pid], reader_url))
        figures = measure(backends, workload.instant_ms, workload.start_ms, workload.end_ms - workload.step_ms,
                          step_s, reps, progress)
    finally:
        for service in reversed(started_services):
            service.stop()
    return Report(workload, len(workload.labels()), workload.samples(), archive_files, compaction, timings, figures)


def _cell(figure: Figure) -> str:
    return f"{figure.p50_ms:g} / {figure.p99_ms:g}"


def _mib(value: float | None) -> str:
    return "" if value is None else f"{value / 2**20:.2f}"


def markdown(report: Report) -> str:
    lines = ["| query | kind | prometheus p50 / p99 ms | victoriametrics | reader uncompacted | reader compacted "
             "| compacted / prometheus (p50) | CPU ms per query: prometheus / VM / uncompacted / compacted "
             "| reader MiB read: uncompacted / compacted | answers |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for query in QUERIES:
        for kind in KINDS:
            row = {b: report.figure(b, query, kind) for b in BACKENDS}
            ratio = row[GOAL].p50_ms / row[REFERENCE].p50_ms if row[REFERENCE].p50_ms else math.nan
            agree = "readers = prometheus" if all(row[b].agrees for b in BACKENDS[2:]) else \
                "READERS DIFFER: " + "; ".join(f"{b}: {row[b].difference}" for b in BACKENDS[2:] if row[b].difference)
            vm = row["victoriametrics"]
            agree += "; VM " + ("equal" if vm.agrees else f"differs ({vm.difference})")
            lines.append(f"| {query} | {kind} | {' | '.join(_cell(row[b]) for b in BACKENDS)} | {ratio:.1f}x "
                         f"| {' / '.join(f'{row[b].cpu_ms:g}' for b in BACKENDS)} "
                         f"| {_mib(row['reader-uncompacted'].bytes_read)} / {_mib(row[GOAL].bytes_read)} | {agree} |")
    lines += ["", "| backend | geometric mean of p50 / prometheus | of CPU / prometheus | sum of p50 (ms) | "
              "sum of CPU (ms) |", "|---|---|---|---|---|"]
    for backend in BACKENDS:
        mine = [f for f in report.figures if f.backend == backend]
        lines.append(f"| {backend} | {geometric_mean(report.ratios(backend, 'p50_ms')):.2f}x "
                     f"| {geometric_mean(report.ratios(backend, 'cpu_ms')):.2f}x | {sum(f.p50_ms for f in mine):,.0f} "
                     f"| {sum(f.cpu_ms for f in mine):,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.query", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=10_000, help="series (20 per target; default 10000)")
    parser.add_argument("--minutes", type=float, default=60, help="span of the data, 15 s scrapes (default 60)")
    parser.add_argument("--reps", type=int, default=10, help="timed runs per query and backend (default 10)")
    parser.add_argument("--window", type=int, default=60, help="the pipeline's window in seconds: one archive "
                                                               "file per window (default 60, the pipeline's)")
    parser.add_argument("--step", type=int, default=30, help="range-query step in seconds (default 30)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-query-") as folder:
        report = run(args.series, args.minutes, args.reps, Path(folder), args.window, args.step)
    w = report.workload
    print(f"\n{report.series:,} series x {w.steps} scrapes ({w.step_ms // 1000} s) = {report.samples:,} samples; "
          f"archive: {report.archive_files} window files; compaction: {report.compaction}; {args.reps} timed runs "
          f"per query and backend; setup {report.setup_seconds}\n")
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps({"workload": dataclasses.asdict(w), "setup_seconds": report.setup_seconds,
                                         "figures": [dataclasses.asdict(f) for f in report.figures]}, indent=1))
    wrong = report.disagreements()
    if wrong:
        raise SystemExit(f"{len(wrong)} reader answers differ from Prometheus': "
                         + "; ".join(f"{f.backend} {f.query} {f.kind}: {f.difference}" for f in wrong))


if __name__ == "__main__":
    main()
