"""`python -m pipeline.compact`: rewrite closed hour partitions of the archive into few sorted Parquet files.

A bounded Beam job, one element per tenant=/date=/hour= partition (local runner or Dataflow). Each closed
partition's window files (part-*.ndjson.gz | part-*.parquet) become compacted-<id>-<n>.parquet files with
the archive's schema, sorted by series then time, through a marker protocol that readers and the restore
job honour (docs/compaction.md): a reader sees the old files or the new ones, never both, and a rerun
after a crash finishes the job. The metadata companion files (ARCHIVE/_metadata/...) are left as they are.
Exit 0 when every selected partition is compacted, 1 when some could not be (named on stderr).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.launcher import known_flags
from pipeline.local_loop import BOUNDED_RUNNER
from pipeline.options import is_local
from transforms.beam.compaction import NAMESPACE, CompactPartitions
from transforms.beam.restore import partition_of
from transforms.core.archive.compaction import partition_closed
from transforms.core.flags import respell
from transforms.core.protocol import format_ms
from transforms.core.restore.selection import SelectionError, parse_time
from transforms.io.compaction import partitions

PROG = "python -m pipeline.compact"
DEFAULT_DELAY_S = 3600  # late windows and backlogs land within this much after an hour ends


def parser() -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                  epilog="Other flags are Beam options (--runner, --project, --region, ...).")
    out.add_argument("--archive_path", required=True,
                     help="The archive: a local directory, gs://bucket/prefix or s3://bucket/prefix.")
    out.add_argument("--before", default=None,
                     help="Compact only hours that ended at or before this time: RFC 3339, a date (its midnight "
                          "UTC) or Unix seconds (default: one hour ago, so late windows have landed).")
    out.add_argument("--tenant", action="append", default=None, help="Only this tenant's partitions (repeatable).")
    return out


def selected(archive_path: str, before_ms: int, tenants: Sequence[str] | None) -> list[str]:
    return [p for p in partitions(archive_path)
            if partition_closed(*partition_of(p + "/")[1:], before_ms)
            and (tenants is None or partition_of(p + "/")[0] in tenants)]


def build(pipeline: beam.Pipeline, chosen: Sequence[str]) -> None:
    """The job's graph: the selected partition folders, one element each, compacted."""
    _ = pipeline | "Partitions" >> beam.Create(chosen) | "Compact" >> CompactPartitions()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args_parser = parser()
    argv = respell(sys.argv[1:] if argv is None else argv, "_", known_flags(args_parser))
    try:
        args, beam_args = args_parser.parse_known_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    options = PipelineOptions(beam_args)
    standard = options.view_as(StandardOptions)
    if standard.runner is None or is_local(standard.runner):
        standard.runner = BOUNDED_RUNNER  # batch on this machine, without Prism's download attempt
    elif not args.archive_path.startswith(("gs://", "s3://")):
        print(f"compact: --archive_path {args.archive_path!r}: runner {standard.runner} works on remote "
              "workers; use gs:// or s3://", file=sys.stderr)
        return 2
    try:
        before_ms = parse_time(args.before, "--before") if args.before else int((time.time() - DEFAULT_DELAY_S) * 1000)
    except SelectionError as exc:
        print(f"compact: {exc}", file=sys.stderr)
        return 2
    FileSystems.set_options(options)
    chosen = selected(args.archive_path, before_ms, args.tenant)
    if not chosen:
        print(f"compact: no partition under {args.archive_path} ended by {format_ms(before_ms)}"
              + (f" for tenant(s) {', '.join(args.tenant)}" if args.tenant else ""))
        return 0
    pipeline = beam.Pipeline(options=options)
    build(pipeline, chosen)
    result = pipeline.run()
    result.wait_until_finish()
    counts = {c.key.metric.name: (c.committed if c.committed is not None else c.attempted) or 0
              for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]}
    print(f"compact: {len(chosen)} partition(s) ended by {format_ms(before_ms)}: {counts.get('partitions', 0)} "
          f"done, {counts.get('inputs', 0)} file(s) -> {counts.get('outputs', 0)} compacted, "
          f"{counts.get('rows', 0)} rows, {counts.get('bytes_in', 0)} -> {counts.get('bytes_out', 0)} bytes; "
          f"{counts.get('finished', 0)} interrupted compaction(s) finished, {counts.get('undone', 0)} redone")
    failed = counts.get("partitions_failed", 0)
    if failed:
        print(f"compact: {failed} partition(s) left as they are (named above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
