"""`make bench-query` at a tiny scale (200 series x 10 minutes, 2 timed runs): the whole harness against the
real Prometheus 2.42, VictoriaMetrics and reader, producing figures for every backend, query and kind, and
the readers' answers equal to Prometheus' own, before and after compaction."""

from __future__ import annotations

from bench.query import BACKENDS, REFERENCE, markdown, run
from bench.query_measure import KINDS, QUERIES


def test_the_benchmark_runs_small_and_the_readers_answer_as_prometheus(tmp_path):
    report = run(series=200, minutes=10, reps=2, work=tmp_path, progress=False)
    assert report.series == 200 and report.archive_files == 10  # one file per 60 s window
    assert "1 done, 10 file(s) -> 1 compacted" in report.compaction
    assert len(report.figures) == len(BACKENDS) * len(QUERIES) * len(KINDS)
    for figure in report.figures:
        assert 0 < figure.p50_ms <= figure.p99_ms, figure
        assert figure.cpu_ms >= 0, figure
        assert (figure.agrees is None) == (figure.backend == REFERENCE), figure
    assert report.disagreements() == []  # the readers: value for value, NaN and stale markers included
    for query in QUERIES:
        for kind in KINDS:
            uncompacted = report.figure("reader-uncompacted", query, kind)
            compacted = report.figure("reader-compacted", query, kind)
            assert uncompacted.files_read == 10 and compacted.files_read == 1, query
            if query == "absent":  # once the groups' series are known, a name no group holds reads nothing
                assert compacted.bytes_read == uncompacted.bytes_read == 0, query
                continue
            # (at this size one row group holds the compacted hour, so it reads no less than the window files
            # left after pruning; the full-size run's figures are in docs/query.md)
            assert 0 < compacted.bytes_read and 0 < uncompacted.bytes_read, query
    # the stale job: gone at the instant (its marker is 2 minutes back), two targets' series over the range
    assert {report.figure(b, "stale series", "instant").series for b in BACKENDS} == {0}
    assert {report.figure(b, "stale series", "range").series for b in BACKENDS} == {2}
    assert {report.figure(b, "count by job", "instant").series for b in BACKENDS} == {4}  # batch is gone
    assert report.figure("victoriametrics", "count by job", "range").agrees  # the comparison can say yes
    table = markdown(report)
    assert all(f"| {query} | {kind} |" in table for query in QUERIES for kind in KINDS)
