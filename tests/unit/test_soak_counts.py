"""make soak-streaming's sample bookkeeping: distinct samples and duplicates, archive lines and exported values."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np

from tools.soak_streaming import SERIES, SampleCounts, archived


def test_counts_tell_lost_from_duplicated_samples():
    counts = SampleCounts(3)
    for request in range(3):
        for series in range(SERIES):
            counts.add(request, series)
    counts.add(1, 7)  # a duplicate line
    counts.add(5, 0)  # a request never published (the feeder's or a stray): not counted
    assert counts.distinct == 3 * SERIES and counts.duplicates == 1

    exported = SampleCounts(3)
    exported.add_values(4, np.array([0, 2, 2, 9]))  # series 4 holds requests 0 and 2 (twice); 9 is unknown
    assert exported.distinct == 2 and exported.duplicates == 1


def _line(name: str, series: int, request: int) -> str:
    return json.dumps({"name": name, "tags": {"i": str(series), "job": "soak"}, "timestamp": "2026-12-06T01:00:00.000Z",
                       "kind": "absolute", "gauge": {"value": float(request)}})


def test_archived_reads_each_new_file_once_and_counts_its_soak_lines(tmp_path):
    partition = tmp_path / "tenant=default" / "date=2026-12-06" / "hour=01"
    partition.mkdir(parents=True)
    first = partition / "a.ndjson.gz"
    first.write_bytes(gzip.compress("\n".join([
        _line("soak_stream", 3, 0), _line("soak_stream", 4, 0), _line("soak_stream", 3, 1),
        _line("other_metric", 3, 2),  # not the soak's: not counted
    ]).encode() + b"\n"))
    seen: dict[str, float] = {}
    first_file: dict[int, float] = {}
    lines = SampleCounts(3)
    archived(tmp_path, seen, first_file, lines)
    assert lines.distinct == 3 and lines.duplicates == 0
    assert sorted(first_file) == [0, 1] and set(seen) == {str(first)}

    second = partition / "b.ndjson.gz"  # a redelivered sample, and request 2 for the first time
    second.write_bytes(gzip.compress((_line("soak_stream", 3, 1) + "\n" + _line("soak_stream", 5, 2) + "\n").encode()))
    os.utime(second, (first_file[0] + 10, first_file[0] + 10))
    archived(tmp_path, seen, first_file, lines)  # the first file is not read again
    assert lines.distinct == 4 and lines.duplicates == 1
    assert first_file[2] == first_file[0] + 10 and first_file[1] < first_file[2]
