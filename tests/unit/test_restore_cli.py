"""The restore command's edges that need no service: help, runner checks, the progress bar."""

from __future__ import annotations

import io
import threading

from pipeline import restore
from tools import services
from transforms.beam.restore import RestoreProgress, format_of, partition_of


def test_help_names_every_restore_and_sink_flag(capsys) -> None:
    assert restore.main(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--archive_path", "--start", "--end", "--tenant", "--match", "--rate_limit", "--dry_run",
                 "--fail_fast", "--max_retry_duration", "--remote_write_url", "--remote_write_config", "--runner"):
        assert flag in text
    assert all(action.help for action in restore.help_parser()._actions)


def test_a_remote_runner_needs_an_object_store_archive(capsys) -> None:
    code = restore.main(["--archive_path=./archive", "--remote_write_url=http://127.0.0.1:1/w",
                         "--runner=DataflowRunner"])
    assert code == 2 and "use gs:// or s3://" in capsys.readouterr().err


def test_an_unknown_tenant_names_the_tenants_in_the_range(tmp_path, capsys) -> None:
    for tenant, hour in (("team-a", "09"), ("team-b", "09"), ("team-c", "11")):
        part = tmp_path / f"tenant={tenant}/date=2026-12-05/hour={hour}/part-x-0000.ndjson.gz"
        part.parent.mkdir(parents=True)
        part.write_bytes(b"")  # listed, never read: the check comes before any file is opened
    code = restore.main([f"--archive_path={tmp_path}", "--remote_write_url=http://127.0.0.1:1/w", "--tenant=nobody",
                         "--tenant=team-a", "--start=2026-12-05", "--end=2026-12-05T10:00:00Z"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "tenant(s) nobody" in err[0] and "between --start and --end" in err[0]
    assert err[0].endswith("tenants there: team-a, team-b")  # team-c's hour is outside the range


def test_a_sink_refusing_connections_stops_the_restore_in_one_line(tmp_path, capsys) -> None:
    part = tmp_path / "tenant=a/date=2026-12-05/hour=09/part-x-0000.ndjson.gz"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"")  # never read: the sink is probed first
    port = services.free_port()  # nothing listens there
    code = restore.main([f"--archive_path={tmp_path}", f"--remote_write_url=http://127.0.0.1:{port}/api/v1/write"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"restore: sink rw-127-0-0-1-{port}-api-v1-write: cannot connect to http://127.0.0.1:{port}")
    assert "(Connection refused); nothing was sent" in err[0]


def test_the_progress_bar_shows_files_read(monkeypatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(restore.sys, "stderr", out)
    progress = RestoreProgress()
    for _ in range(4):
        progress.add_read(250)
    done = threading.Event()
    done.set()
    restore._progress_bar(progress, 4, done)
    assert "reading: 100%" in out.getvalue() and "4/4" in out.getvalue()


def test_files_are_told_apart_by_suffix_and_partition() -> None:
    assert format_of("x/tenant=a/date=2026-11-25/hour=09/part-1.parquet").name == "parquet"
    assert format_of("part-1.ndjson.gz").name == "ndjson"
    assert partition_of("gs://b/p/tenant=a/date=2026-11-25/hour=09/part-1.parquet") == ("a", "2026-11-25", "09")


def test_the_rate_limit_is_a_service_layer_that_waits_for_each_attempts_tokens(monkeypatch) -> None:
    from transforms.core.retry import Attempt, classify
    from transforms.io.rate_limit import RateLimitedService

    slept: list[float] = []
    monkeypatch.setattr("transforms.io.rate_limit.time.sleep", slept.append)
    posted: list[int] = []

    class Sink:
        def post(self, body: bytes, headers: dict[str, str], points: int) -> Attempt:
            posted.append(points)
            return Attempt(classify(204, None), "", 0.0)

    progress = RestoreProgress()
    progress.bucket.rate = 1000.0
    service = RateLimitedService(Sink(), progress.bucket)
    assert service.post(b"x", {}, 3000).outcome.status == 204  # three seconds' worth at once: about 3 s
    assert posted == [3000] and slept and 2.9 < slept[0] <= 3.0
    progress.bucket.rate = None
    service.post(b"x", {}, 10**9)
    assert len(slept) == 1  # unlimited: no wait


def test_restore_lists_a_partition_mid_compaction_through_the_reader_rule(tmp_path, capsys) -> None:
    from transforms.core.archive.compaction import Marker
    from transforms.core.restore.selection import Selection

    folder = tmp_path / "tenant=t/date=2026-12-05/hour=09"
    folder.mkdir(parents=True)
    inputs = ["part-a-0000.ndjson.gz", "part-b-0000.parquet"]
    marker = Marker.new(inputs, 1)
    for name in inputs:
        (folder / name).write_bytes(b"")
    (folder / marker.name).write_bytes(marker.to_json())
    listed = [p.rsplit("/", 1)[-1] for p in restore.list_files(str(tmp_path), Selection())[0]]
    assert listed == inputs, "step 1 done: the inputs are the data"
    (folder / marker.outputs[0]).write_bytes(b"")
    listed = [p.rsplit("/", 1)[-1] for p in restore.list_files(str(tmp_path), Selection())[0]]
    assert listed == list(marker.outputs), "step 2 done: the compacted file is the data"

    (folder / marker.name).write_bytes(b"{not json")
    code = restore.main([f"--archive_path={tmp_path}", "--dry_run"])
    err = capsys.readouterr().err
    assert code == 2 and marker.name in err and "not a compaction marker" in err
