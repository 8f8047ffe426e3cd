"""`python -m pipeline.restore`: write any slice of the archive back through remote-write.

A bounded Beam job. It lists the archive's files (NDJSON and Parquet, mixed; local, gs://, s3://),
prunes tenant=/date=/hour= partitions by --tenant/--start/--end, reads the rest, keeps the samples
inside the time range that match a --match selector, and delivers them through the sinks' own
machinery (transforms/core/sink), with each family's type, help and unit from the metadata files of the
same partitions (ARCHIVE/_metadata/...) and 2.0 start timestamps to 2.0 sinks. Exit 0 only when every
selected sample was delivered.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import threading
import uuid
from collections import defaultdict
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, S3Options, StandardOptions
from apache_beam.utils.shared import Shared

from pipeline.launcher import known_flags
from pipeline.local_loop import BOUNDED_RUNNER
from pipeline.options import SinkOptions, is_local, sinks_from_options
from transforms.beam.restore import (
    CORRUPT,
    CorruptArchiveFile,
    MergeMetadata,
    ReadArchiveFile,
    ReadMetadataFile,
    RestoreProgress,
    RestoreToSink,
    format_of,
    partition_of,
)
from transforms.core.archive.compaction import MARKER_PREFIX, MARKER_SUFFIX, CompactionError, Marker, live_files
from transforms.core.archive.format import FORMATS, PARTITION_GLOB
from transforms.core.archive.records import METADATA_DIR
from transforms.core.flags import respell
from transforms.core.protocol import format_ms
from transforms.core.restore.selection import Selection, SelectionError, to_request
from transforms.core.sink.config import SinkConfig, SinkConfigError, parse_duration
from transforms.io.files import read_whole
from transforms.io.http_sink import unreachable
from transforms.io.sink_auth import credential_problems

PROG = "python -m pipeline.restore"
DEFAULT_MAX_RETRY = "5m"


def restore_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, add_help=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_argument_group("restore")
    group.add_argument("--archive_path", required=True,
                       help="The archive to read: a local directory, gs://bucket/prefix or s3://bucket/prefix "
                            "(its tenant=T/date=YYYY-MM-DD/hour=HH/part-* files, .ndjson.gz and .parquet alike).")
    group.add_argument("--start", default=None,
                       help="Only samples at or after this time: RFC 3339 (2026-11-25T09:00:00Z, "
                            "2026-11-25T10:00:00+01:00), a date (2026-11-25: its midnight UTC) or Unix seconds.")
    group.add_argument("--end", default=None, help="Only samples at or before this time (same forms as --start).")
    group.add_argument("--tenant", action="append", default=None,
                       help="Only this tenant's partitions (repeatable); each tenant goes out as its own "
                            "X-Scope-OrgID unless --remote_write_tenant/_tenant_header say otherwise.")
    group.add_argument("--match", action="append", default=None,
                       help="Prometheus series selector, e.g. '{job=\"node\",__name__=~\"node_cpu.*\"}' "
                            "(=, !=, =~, !~; regexes anchored). Repeatable: a series matching any is kept.")
    group.add_argument("--rate_limit", type=float, default=None,
                       help="At most this many samples per second, per worker process (default: unlimited).")
    group.add_argument("--max_retry_duration", default=DEFAULT_MAX_RETRY,
                       help="How long a sink may keep failing (refused connections, 5xx, 429) before the "
                            "restore gives up: the requests in flight then, and every later one while it still "
                            "fails, are dead-lettered (e.g. 30s, 5m; for sinks whose sinks-file entry sets none; "
                            f"default {DEFAULT_MAX_RETRY}).")
    group.add_argument("--dead_letter_path", default=None,
                       help="Where refused requests go, replayable (default ARCHIVE_PATH/_dead_letters/restore).")
    group.add_argument("--dry_run", action="store_true",
                       help="Print the series, samples and time range per tenant that would be sent; send nothing.")
    group.add_argument("--fail_fast", action="store_true",
                       help="Stop at the first unreadable archive file, before anything is sent (default: name "
                            "it, skip it, restore the rest and exit 1).")
    return parser


USAGE = (f"{PROG} --archive_path=PATH (--remote_write_url=URL | --remote_write_config=FILE | --dry_run) "
         "[--start T] [--end T] [--tenant T] [--match SELECTOR] [options] [Beam options]")
# The sink flags are shared with the pipeline; where the pipeline's text is about Pub/Sub, restore's differs.
RESTORE_SINK_HELP = {
    "remote_write_url": "Send the selected samples to this remote-write endpoint (repeatable, or comma-separated, "
                        "to send the same samples to several).",
    "remote_write_config": "YAML/JSON sinks file with a 'remote_write:' list, one entry per sink, in the spirit of "
                           "Prometheus' remote_write block (local path, gs:// or s3://). Adds to --remote_write_url.",
}


def help_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, usage=USAGE, description=__doc__, parents=[restore_parser()],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Flags may be spelled with - or _ (--archive-path, --archive_path). "
                                            "Every other standard Beam option is accepted and passed through.")
    for name, options_class in (("remote-write sinks", SinkOptions), ("Beam: runner", StandardOptions),
                                ("Beam: Google Cloud", GoogleCloudOptions), ("Beam: S3", S3Options)):
        options_class._add_argparse_args(parser.add_argument_group(name))
    for action in parser._actions:
        action.help = RESTORE_SINK_HELP.get(action.dest, action.help)
    return parser


class Usage(Exception):
    """Bad input from the user: one line, exit 2."""


def list_files(archive_path: str, selection: Selection, under: str = "") -> tuple[list[str], int]:
    """(files of selected partitions, files in the archive), for every format; `under` = METADATA_DIR for the
    companion metadata files."""
    root = FileSystems.join(archive_path, under) if under else archive_path
    patterns = [FileSystems.join(root, *PARTITION_GLOB, fmt.glob()) for fmt in FORMATS.values()]
    patterns.append(FileSystems.join(root, *PARTITION_GLOB, f"{MARKER_PREFIX}*{MARKER_SUFFIX}"))
    results = FileSystems.match(patterns)
    found = [m.path for result in results[:-1] for m in result.metadata_list]
    markers = [m.path for m in results[-1].metadata_list]
    if markers:  # a compaction in flight or interrupted: each partition's files as the reader rule has them
        found = live_archive_files(found, markers)
    kept = [p for p in sorted(found) if selection.keeps_partition(*partition_of(p))]
    return kept, len(found)


def live_archive_files(paths: Sequence[str], marker_paths: Sequence[str]) -> list[str]:
    """`paths` less what the compaction markers (transforms/core/archive/compaction.py) hide, partition by
    partition; CompactionError for a marker that is not one."""
    markers: dict[str, dict[str, Marker]] = defaultdict(dict)
    for path in marker_paths:
        markers[path.rsplit("/", 1)[0]][path] = Marker.from_json(read_whole(path), path)
    files: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        files[path.rsplit("/", 1)[0]].append(path)
    return [p for folder, names in files.items() for p in live_files(names, markers.get(folder, {}))]


def check_tenants(archive_path: str, selection: Selection, files: Sequence[str]) -> None:
    """A --tenant with no partition in the time range is a typo more often than an empty hour: name the
    tenants that are there."""
    if selection.tenants is None:
        return
    missing = selection.tenants - {partition_of(path)[0] for path in files}
    if not missing:
        return
    in_range, _ = list_files(archive_path, dataclasses.replace(selection, tenants=None))
    present = sorted({partition_of(path)[0] for path in in_range})
    where = "between --start and --end" if selection.start_ms is not None or selection.end_ms is not None else ""
    raise Usage(f"no archive files of tenant(s) {', '.join(sorted(missing))} under {archive_path} {where}".rstrip()
                + f"; tenants there: {', '.join(present) if present else 'none'}")


def with_retry_limit(sinks: list[SinkConfig], limit: float) -> list[SinkConfig]:
    """A bounded job must end: transient failures are retried at most `limit` seconds, then dead-lettered."""
    return [s if s.queue.max_retry_duration is not None else
            dataclasses.replace(s, queue=dataclasses.replace(s.queue, max_retry_duration=limit)) for s in sinks]


def dry_run(files: Sequence[str], selection: Selection) -> int:
    tenants: dict[str, dict] = defaultdict(lambda: {"series": set(), "samples": 0, "first": None, "last": None})
    bad = 0
    for path in files:
        try:
            restored = to_request(format_of(path).points(read_whole(path)), selection)
        except Exception as exc:
            print(f"restore: unreadable archive file {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            bad += 1
            continue
        entry = tenants[partition_of(path)[0]]
        entry["series"].update(restored.series)
        entry["samples"] += restored.samples
        for key, pick in (("first", min), ("last", max)):
            value = restored.first_ms if key == "first" else restored.last_ms
            if value is not None:
                entry[key] = value if entry[key] is None else pick(entry[key], value)
    shown = {t: e for t, e in tenants.items() if e["samples"]}
    if not shown:
        print(f"restore: nothing selected ({len(files)} file(s) read)")
    for tenant, e in sorted(shown.items()):
        print(f"tenant {tenant}: {len(e['series'])} series, {e['samples']} samples, "
              f"{format_ms(e['first'])} .. {format_ms(e['last'])} (dry run: nothing sent)")
    return 1 if bad else 0


def _progress_bar(progress: RestoreProgress, files: int, done: threading.Event) -> None:
    from tqdm import tqdm

    bar = tqdm(total=files, unit="file", desc="reading", file=sys.stderr)
    while not done.wait(0.5) and progress.files_read < files:
        bar.update(progress.files_read - bar.n)
        bar.set_postfix(samples=progress.samples_selected)
    bar.update(progress.files_read - bar.n)
    bar.close()
    if done.is_set():
        return
    bar = tqdm(total=progress.samples_selected, unit="sample", unit_scale=True, desc="sending", file=sys.stderr)
    while not done.wait(0.5):
        counts = progress.stats.counts
        bar.update(counts["samples_sent"] + counts["samples_dead_lettered"] - bar.n)
    bar.close()


def counters(result) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for counter in result.metrics().query(MetricsFilter())["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        out[f"{counter.key.metric.namespace}:{counter.key.metric.name}"] += value or 0
    return out


def run(args: argparse.Namespace, options: PipelineOptions, sinks: list[SinkConfig], files: list[str],
        selection: Selection, metadata_files: list[str]) -> int:
    dead_letter_path = args.dead_letter_path or FileSystems.join(args.archive_path, "_dead_letters", "restore")
    shared, tag = Shared(), uuid.uuid4().hex
    progress = shared.acquire(RestoreProgress, tag)  # held here: a local run's DoFns share this very object
    done = threading.Event()
    bar = None
    if sys.stderr.isatty() and is_local(options.view_as(StandardOptions).runner):
        bar = threading.Thread(target=_progress_bar, args=(progress, len(files), done), daemon=True)
        bar.start()
    pipeline = beam.Pipeline(options=options)
    side = {}
    if metadata_files:  # the archive's metadata records of the selected partitions: type, help, unit per family
        records = (pipeline | "MetadataFiles" >> beam.Create(metadata_files)
                   | "ReadMetadata" >> beam.ParDo(ReadMetadataFile(args.fail_fast)).with_outputs(
                       CORRUPT, main="records"))
        side["metadata"] = beam.pvalue.AsSingleton(records.records | "MergeMetadata" >> beam.CombineGlobally(
            MergeMetadata()))
    read = (pipeline | "Files" >> beam.Create(files) | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadArchiveFile(selection, args.fail_fast, shared, tag), **side).with_outputs(
                CORRUPT, main="requests"))
    for sink in sinks:
        _ = read.requests | f"Restore[{sink.name}]" >> RestoreToSink(sink, dead_letter_path, args.rate_limit,
                                                                     shared, tag)
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as exc:
        done.set()
        text = str(exc)
        if "CorruptArchiveFile" in text or isinstance(exc, CorruptArchiveFile):
            line = next((x for x in text.splitlines() if "CorruptArchiveFile" in x), text.splitlines()[0])
            print(f"restore: stopped (--fail_fast), nothing sent: {line.split('CorruptArchiveFile: ')[-1]}",
                  file=sys.stderr)
            return 1
        raise
    finally:
        done.set()
        if bar is not None:
            bar.join()
    return summarize(counters(result), sinks, dead_letter_path)


def summarize(found: dict[str, int], sinks: list[SinkConfig], dead_letter_path: str) -> int:
    selected, corrupt = found["restore:samples_selected"], found["restore:files_corrupt"]
    failed = bool(corrupt)
    if not selected and not corrupt:
        print(f"restore: nothing selected ({found['restore:files_read']} file(s) read)")
        return 0
    for sink in sinks:
        c = {name: found[f"sink/{sink.name}:{name}"] for name in (
            "samples_sent", "samples_retried", "samples_dead_lettered", "samples_dropped_by_rules", "metadata_sent",
            "requests", "requests_dead_lettered", "metadata_dead_lettered")}
        # the same sample in several files (a redelivered message, an archive in both formats) goes out once
        repeats = selected - c["samples_sent"] - c["samples_dead_lettered"] - c["samples_dropped_by_rules"]
        print(f"restore: sink {sink.name}: {selected} selected, {c['samples_sent']} sent, "
              f"{c['samples_retried']} retried, {c['samples_dead_lettered']} dead-lettered, "
              f"{c['samples_dropped_by_rules']} dropped by rules, {max(repeats, 0)} exact repeats sent once, "
              f"{corrupt} file(s) skipped; {c['requests']} requests, {c['metadata_sent']} metadata entries")
        if c["requests_dead_lettered"]:
            failed = True
            print(f"restore: sink {sink.name}: {c['requests_dead_lettered']} request(s) refused or given up on "
                  f"({c['samples_dead_lettered']} samples, {c['metadata_dead_lettered']} metadata entries), "
                  f"dead-lettered under {FileSystems.join(dead_letter_path, 'sink=' + sink.name)}", file=sys.stderr)
    if corrupt:
        print(f"restore: {corrupt} unreadable archive file(s) skipped (named above)", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = help_parser()
    argv = respell(sys.argv[1:] if argv is None else argv, "_", known_flags(parser))
    if "-h" in argv or "--help" in argv:
        parser.print_help()
        return 0
    try:
        args, beam_args = restore_parser().parse_known_args(argv)
    except SystemExit as exc:  # argparse already printed its one line
        return 2 if exc.code else 0
    options = PipelineOptions(beam_args)
    try:
        selection = Selection.parse(args.start, args.end, args.tenant, args.match)
        if args.rate_limit is not None and args.rate_limit <= 0:
            raise Usage("--rate_limit must be a positive number of samples per second")
        limit = parse_duration(args.max_retry_duration, "--max_retry_duration")
        sinks = with_retry_limit(sinks_from_options(options.view_as(SinkOptions)), limit)
        if not sinks and not args.dry_run:
            raise Usage("give --remote_write_url or --remote_write_config (or --dry_run)")
        if problems := credential_problems(sinks):
            raise Usage("; ".join(problems))
        runner = options.view_as(StandardOptions).runner
        if not is_local(runner) and not args.archive_path.startswith(("gs://", "s3://")):
            raise Usage(f"--archive_path {args.archive_path!r}: runner {runner} reads on remote workers; "
                        "use gs:// or s3://")
        FileSystems.set_options(options)
        files, total = list_files(args.archive_path, selection)
        if not total:
            raise Usage(f"no archive files (tenant=*/date=*/hour=*/part-*) under {args.archive_path}")
        check_tenants(args.archive_path, selection, files)
    except (SelectionError, SinkConfigError, CompactionError, Usage) as exc:
        print(f"restore: {exc}", file=sys.stderr)
        return 2
    if not files:
        print(f"restore: nothing selected (no partition of {total} file(s) matches --tenant/--start/--end)")
        return 0
    if args.dry_run:
        return dry_run(files, selection)
    standard = options.view_as(StandardOptions)
    if standard.runner is None or is_local(standard.runner):
        standard.runner = BOUNDED_RUNNER  # batch on this machine, without Prism's download attempt
    for sink in sinks:  # a sink nobody listens on fails in seconds, before any file is read
        problem = unreachable(sink.url)
        if problem:
            print(f"restore: sink {sink.name}: cannot connect to {sink.url} ({problem}); nothing was sent. "
                  "Is it running, and is the URL right?", file=sys.stderr)
            return 1
    metadata_files, _ = list_files(args.archive_path, selection, under=METADATA_DIR)
    return run(args, options, sinks, files, selection, metadata_files)


if __name__ == "__main__":
    sys.exit(main())
