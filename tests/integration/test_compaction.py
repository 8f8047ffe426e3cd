"""`python -m pipeline.compact` as a user runs it, on an archive written with the pipeline's own format code
(NDJSON and Parquet window files, two tenants, two hours, 1000-sample requests with stale markers, odd NaNs,
a native histogram and an exemplar): restore's records and a DuckDB query answer the same before and after,
the output is sorted and few, a rerun changes nothing, and a kill at any step of the protocol leaves
readers the full data once, which a rerun then compacts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import apache_beam as beam
import duckdb
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.compact import build
from pipeline.restore import list_files
from tests.archive_samples import sample_request
from tests.readme_helpers import marked_query
from tests.reference import metric_to_log
from transforms.beam.restore import format_of
from transforms.core.archive.compaction import is_compacted, is_marker
from transforms.core.archive.format import archive_format, partition_parts
from transforms.core.archive.lines import LineBlock
from transforms.core.archive.records import MetadataRecord
from transforms.core.metadata import MetadataStore
from transforms.core.protocol import STALE_NAN
from transforms.core.restore.selection import Selection
from transforms.core.wire.builders import Series, build_v1
from transforms.io.compaction import CRASH_AFTER_ENV
from transforms.io.files import read_whole

ROOT = Path(__file__).resolve().parents[2]
KILLED = 137  # the hook's os._exit status, as after kill -9
T8 = 1_795_593_600_000  # 2026-11-25T08:00:00Z
ODD_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000ABC))[0]
WINDOWS = 8  # window files per partition
SERIES, POINTS = 100, 10  # 1000 samples per request, as Prometheus sends
PARQUET_QUERY = """
SELECT tenant, date, hour, name, count(*) AS samples, min(timestamp) AS first, max(timestamp) AS last,
       min(value) AS low, max(value) AS high, count(DISTINCT value) AS distinct_values,
       count(*) FILTER (WHERE special = 'StaleNaN') AS stale_markers,
       count(*) FILTER (WHERE special LIKE 'NaN%') AS nans
FROM read_parquet('{archive}/tenant=*/date=*/hour=*/*.parquet', hive_partitioning = true)
GROUP BY ALL ORDER BY ALL
"""


def request(hour_ms: int, window: int) -> object:
    """SERIES series x POINTS samples in one 5 s window; some stale markers and NaN payloads."""
    series = []
    for s in range(SERIES):
        points = []
        for p in range(POINTS):
            ms = hour_ms + window * 5000 + p * 500 + s % 7
            value = float(s * 1000 + window * POINTS + p) + 0.1
            if (s + p) % 97 == 0:
                value = STALE_NAN
            elif (s * p) % 89 == 1:
                value = ODD_NAN
            points.append((ms, value))
        name = ("node_cpu_seconds_total", "http_requests_total", "up")[s % 3]
        series.append(Series({"__name__": name, "job": f"job-{s % 4}", "instance": f"host-{s}:9100"}, points))
    return build_v1(series)


def write_archive(root: Path) -> None:
    store = MetadataStore()
    store.update("t", {"http_requests_total": "counter"})
    for tenant, fmt in (("team-a", "parquet"), ("team-b", "ndjson")):
        form = archive_format(fmt)
        for hour_ms in (T8, T8 + 3_600_000):
            for window in range(WINDOWS):
                requests = [request(hour_ms, window)]
                if tenant == "team-a" and hour_ms > T8 and window == 0:
                    requests.append(sample_request())  # histograms, exemplars, special values at 09:00
                for req in requests:
                    for partition, records in metric_to_log.convert_v1(req, tenant, store).items():
                        folder = root.joinpath(*partition_parts(partition))
                        folder.mkdir(parents=True, exist_ok=True)
                        chunks, _ = form.file_chunks([form.pack(LineBlock.of_records(records))])
                        name = form.file_name(f"w{window:03d}-{len(list(folder.iterdir()))}", 0)
                        (folder / name).write_bytes(b"".join(chunks))
    metadata = root / "_metadata" / "tenant=team-a" / "date=2026-11-25" / "hour=08"
    metadata.mkdir(parents=True)
    (metadata / "part-x-0000.parquet").write_bytes(archive_format("parquet").encode_metadata(
        [MetadataRecord("http_requests_total", T8, "counter", "Requests.", "")]))


def restored_records(root: Path | str) -> Counter:
    """Every record restore's file listing leads to, as canonical text (NaN bits ride in the text)."""
    files, _ = list_files(str(root), Selection())
    return Counter(json.dumps(r, sort_keys=True) for path in files for r in format_of(path).read(read_whole(path)))


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def compact(root: Path, *extra: str, crash_after: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != CRASH_AFTER_ENV}
    if crash_after:
        env[CRASH_AFTER_ENV] = crash_after
    return subprocess.run([sys.executable, "-m", "pipeline.compact", f"--archive_path={root}", *extra],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("compaction") / "archive"
    write_archive(root)
    return root


@pytest.fixture
def archive(original, tmp_path) -> Path:
    copy = tmp_path / "archive"
    shutil.copytree(original, copy)
    return copy


def partition_files(root: Path) -> dict[str, list[str]]:
    return {str(d.relative_to(root)): sorted(p.name for p in d.iterdir())
            for d in sorted(root.glob("tenant=*/date=*/hour=*"))}


def test_compaction_keeps_every_record_and_every_answer_in_few_sorted_files(archive) -> None:
    before_records = restored_records(archive)
    before_sql = duckdb.sql(PARQUET_QUERY.format(archive=archive)).fetchall()
    before_files = partition_files(archive)
    metadata_before = {k: v for k, v in tree(archive).items() if k.startswith("_metadata")}
    assert sum(before_records.values()) == 4 * WINDOWS * SERIES * POINTS + 10
    assert [len(files) for files in before_files.values()] == [WINDOWS, WINDOWS + 1, WINDOWS, WINDOWS]

    done = compact(archive, "--before=2026-11-25T10:00:00Z")
    assert done.returncode == 0, done.stderr
    assert "4 done, 33 file(s) -> 4 compacted" in done.stdout

    after_files = partition_files(archive)
    assert all(len(files) == 1 and is_compacted(files[0]) for files in after_files.values()), after_files
    assert restored_records(archive) == before_records, "restore reads the same records, bit for bit"
    after_sql = duckdb.sql(PARQUET_QUERY.format(archive=archive)).fetchall()
    assert [row for row in after_sql if row[0] == "team-a"] == before_sql, "the same answers where SQL saw Parquet"
    b_rows = sum(r[4] for r in after_sql if r[0] == "team-b")
    assert b_rows == 2 * WINDOWS * SERIES * POINTS, "NDJSON hours are now queryable as Parquet"
    assert any(r[10] for r in after_sql) and any(r[11] for r in after_sql), "stale markers and NaNs kept"
    assert {k: v for k, v in tree(archive).items() if k.startswith("_metadata")} == metadata_before

    for folder, [name] in after_files.items():
        table = pq.read_table(archive / folder / name)
        keys = [(r["name"], tuple(sorted(r["labels"])), r["timestamp"]) for r in
                table.select(["name", "labels", "timestamp"]).to_pylist()]
        assert keys == sorted(keys), f"{folder}: sorted by series, then time"

    again_tree = tree(archive)
    rerun = compact(archive, "--before=2026-11-25T10:00:00Z")
    assert rerun.returncode == 0, rerun.stderr
    assert "0 file(s) -> 0 compacted" in rerun.stdout
    assert tree(archive) == again_tree, "a second run changes nothing"


def test_only_closed_hours_of_the_chosen_tenant_are_compacted(archive) -> None:
    done = compact(archive, "--before=2026-11-25T09:30:00Z", "--tenant=team-b")
    assert done.returncode == 0, done.stderr
    files = partition_files(archive)
    assert [len(f) for f in files.values()] == [WINDOWS, WINDOWS + 1, 1, WINDOWS], files


@pytest.mark.parametrize("step", ["marker", "outputs", "inputs"])
def test_a_kill_after_any_step_leaves_the_data_once_and_a_rerun_finishes(archive, step) -> None:
    before = restored_records(archive)
    killed = compact(archive, "--before=2026-11-25T10:00:00Z", crash_after=step)
    assert killed.returncode == KILLED, killed.stderr
    names = [p.name for p in archive.rglob("*") if p.is_file()]
    assert any(is_marker(n) for n in names), "killed mid-protocol: the marker is still there"
    assert restored_records(archive) == before, f"after '{step}': readers see the full data once"
    finished = compact(archive, "--before=2026-11-25T10:00:00Z")
    assert finished.returncode == 0, finished.stderr
    assert all(len(files) == 1 and is_compacted(files[0]) for files in partition_files(archive).values())
    assert not any(is_marker(p.name) for p in archive.rglob("*"))
    assert restored_records(archive) == before


def test_a_corrupt_window_file_leaves_its_partition_as_it_is_and_says_so(archive) -> None:
    folder = archive / "tenant=team-a" / "date=2026-11-25" / "hour=08"
    (folder / "part-broken-0000.parquet").write_bytes(b"PAR1 not really")
    done = compact(archive, "--before=2026-11-25T10:00:00Z")
    assert done.returncode == 1
    assert "hour=08 left as it is" in done.stderr and "part-broken" in done.stderr
    assert len(list(folder.iterdir())) == WINDOWS + 1
    assert all(len(files) == 1 for folder, files in partition_files(archive).items() if "team-b" in folder)


def test_duckdb_sees_both_sets_between_steps_2_and_3_and_the_documented_query_does_not(archive, monkeypatch) -> None:
    monkeypatch.chdir(archive.parent)  # the documented query reads archive/...
    count = "SELECT tenant, date, hour, name, count(*) FROM read_parquet('archive/tenant=*/date=*/hour=*/*.parquet', " \
            "hive_partitioning = true) GROUP BY ALL ORDER BY ALL"
    before = duckdb.sql(count).fetchall()
    killed = compact(archive, "--before=2026-11-25T10:00:00Z", "--tenant=team-a", crash_after="outputs")
    assert killed.returncode == KILLED, killed.stderr
    naive = duckdb.sql(count).fetchall()
    assert sum(r[4] for r in naive) == sum(r[4] for r in before) + WINDOWS * SERIES * POINTS, \
        "a plain glob counts the killed partition twice"
    assert duckdb.sql(marked_query("duckdb-compaction-safe")).fetchall() == before
    assert compact(archive, "--before=2026-11-25T10:00:00Z", "--tenant=team-a").returncode == 0
    assert duckdb.sql(count).fetchall() == before, "the rerun finished the killed compaction"


@pytest.mark.parametrize("store", ["gcs", "s3"])
def test_compaction_on_object_storage_is_exact_and_survives_a_kill(store, request, original) -> None:
    extra = request.getfixturevalue(store)
    FileSystems.set_options(PipelineOptions(extra))
    archive = f"{'gs' if store == 'gcs' else 's3'}://archive-bucket/compaction/{time.time_ns()}"
    for path in sorted(p for p in original.rglob("*") if p.is_file()):
        with FileSystems.create(f"{archive}/{path.relative_to(original)}", compression_type="uncompressed") as handle:
            handle.write(path.read_bytes())
    before = restored_records(original)
    assert restored_records(archive) == before

    killed = compact(archive, "--before=2026-11-25T10:00:00Z", *extra, crash_after="outputs")
    assert killed.returncode == KILLED, killed.stderr[-2000:]
    assert restored_records(archive) == before, "between steps 2 and 3 the rule hides the inputs"
    done = compact(archive, "--before=2026-11-25T10:00:00Z", *extra)
    assert done.returncode == 0, done.stderr[-2000:]
    names = [m.path[len(archive) + 1:] for m in FileSystems.match([f"{archive}/**"])[0].metadata_list]
    data = [n for n in names if not n.startswith("_metadata/")]
    assert len(data) == 4 and all(is_compacted(n) for n in data), names
    assert restored_records(archive) == before


def test_the_job_graph_builds_for_dataflow_offline(gcs) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    storage.Client(project="test-project", credentials=AnonymousCredentials()).create_bucket("compact-staging")
    options = PipelineOptions(["--runner=DataflowRunner", "--dry_run=True", "--project=test-project",
                               "--region=us-central1", "--temp_location=gs://compact-staging/tmp",
                               "--staging_location=gs://compact-staging/staging", *gcs])
    pipeline = beam.Pipeline(options=options)
    build(pipeline, ["gs://archive-bucket/a/tenant=t/date=2026-11-25/hour=08"])
    transforms = pipeline.run().job.proto_pipeline.components.transforms
    names = {t.unique_name for t in transforms.values()}
    assert {"Partitions", "Compact", "Compact/Spread", "Compact/Compact"} <= names
    assert "beam:transform:group_by_key:v1" in {t.spec.urn for t in transforms.values()}, \
        "the reshuffle spreads partitions over workers"
