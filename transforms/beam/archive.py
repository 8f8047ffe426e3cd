"""Beam wrappers of the archive: decode + metric-to-log, metric types, archive files, dead letters.

Used by both graphs in pipeline/: the local loop of bounded runs and the streaming job on Dataflow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils.shared import Shared

from transforms.core.archive.format import DEFAULT_FORMAT, UNCOMPRESSED, partition_parts
from transforms.core.archive.format import archive_format as get_format
from transforms.core.archive.lines import PackedBlock, hour_partition
from transforms.core.archive.metric_to_log import ConversionError, Partition, is_metadata_only, message_protocol
from transforms.core.archive.records import METADATA_DIR, MetadataRecord
from transforms.core.deadletter import DeadLetter
from transforms.core.errors import RemoteWriteError
from transforms.core.metadata import TYPE_NAMES, MetadataStore
from transforms.core.protocol import DEFAULT_TENANT, MAX_DECOMPRESSED, TENANT_RULE, Protocol, is_valid_tenant
from transforms.core.wire import codec
from transforms.core.wire.validation import NameValidation
from transforms.io.archived_types import recent_types
from transforms.io.deadletters import write_dead_letters
from transforms.io.files import write_atomically

__all__ = ["ArchiveMessages", "DecodeToRecords", "WriteArchiveFiles", "WriteDeadLetters", "WriteMetadataFiles",
           "DEAD_LETTER", "METADATA"]

DEAD_LETTER = "dead_letter"
METADATA = "metadata"


def seen_ms(message: Any) -> int:
    """When the pipeline saw a message: its publish time (local loop and Dataflow both carry it), else now."""
    published = getattr(message, "publish_time", None)
    if isinstance(published, datetime):
        if published.tzinfo is None:  # a naive time from a Timestamp proto's ToDatetime() is UTC
            published = published.replace(tzinfo=UTC)
        return int(published.timestamp() * 1000)
    return int(time.time() * 1000)


class ExtractMetadataTypes(beam.DoFn):
    """(tenant, {family: type}) from 1.0 metadata-only messages; undecodable ones are skipped here
    (the main conversion dead-letters them)."""

    def process(self, message: Any) -> Iterator[tuple[str, dict[str, str]]]:
        try:
            decoded = codec.decode(message.data, Protocol.V1, MAX_DECOMPRESSED)
        except RemoteWriteError:
            return
        tenant = (message.attributes or {}).get("tenant", DEFAULT_TENANT)
        types = {family: TYPE_NAMES.get(number, "unknown") for family, number in decoded.batch.families or ()}
        if types:
            yield tenant, types


class MergeTypes(beam.CombineFn):
    """All tenants' metadata types seen, merged into one side-input dict."""

    def create_accumulator(self) -> dict[str, dict[str, str]]:
        return {}

    def add_input(self, acc: dict[str, dict[str, str]], element: tuple[str, dict[str, str]]):
        tenant, types = element
        acc.setdefault(tenant, {}).update(types)
        return acc

    def merge_accumulators(self, accumulators: Iterable[dict[str, dict[str, str]]]):
        merged: dict[str, dict[str, str]] = {}
        for acc in accumulators:
            for tenant, types in acc.items():
                merged.setdefault(tenant, {}).update(types)
        return merged

    def extract_output(self, acc: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        return acc


class DecodeToRecords(beam.DoFn):
    """A published message -> (Partition, PackedBlock) per partition: its archive lines as one block, made
    by the compiled decoder and line formatter, packed by the archive format; failures go whole to DEAD_LETTER.

    `metadata` holds the remembered 1.0 types: one MetadataStore per worker process, shared by every
    instance of this DoFn and kept alive by whoever holds it (the local loop across its bounded runs). The
    store learns from the metadata-only messages as they pass through `process`, from the optional `types`
    side input (bounded runs), and, with `warm_types_from` (an archive path), from the archive's recent
    metadata companion files when the worker's store is created.

    Metric metadata (type, help, unit: 1.0 metadata entries, 2.0 per-series metadata) goes to the METADATA
    output as (partition of the hour it was seen, MetadataRecord): about once per family and hour per
    worker process, as the store remembers what it archived (marked when a bundle finishes, so a failed
    bundle's retry emits its records again).
    """

    def __init__(self, metadata: Shared | None = None, archive_format: str = DEFAULT_FORMAT,
                 warm_types_from: str | None = None) -> None:
        self.metadata = metadata or Shared()
        self.format = get_format(archive_format)
        self.warm_types_from = warm_types_from
        self.samples = Metrics.counter("archive", "samples_converted")
        self.lines = Metrics.counter("archive", "lines")
        self.dead = Metrics.counter("archive", "dead_letters")

    def setup(self) -> None:
        self.store: MetadataStore = self.metadata.acquire(self._new_store)
        self.converter = self.format.converter(self.store)  # per tenant: series tables and kind prefixes
        self._types_seen: dict[str, dict[str, str]] = {}  # the side input's dicts already applied
        self._bundle_open = False

    def _new_store(self) -> MetadataStore:
        store = MetadataStore()
        if self.warm_types_from:  # once per worker process: the store is shared by every instance
            for tenant, types in recent_types(self.warm_types_from, int(time.time() * 1000)).items():
                store.update(tenant, types)
        return store

    def start_bundle(self) -> None:
        if self._bundle_open:  # the last bundle failed: what it read may never have reached the archive
            self.converter.forget_metadata()
        self._bundle_open = True
        self._archiving: list[tuple[str, int, dict]] = []

    def finish_bundle(self) -> None:
        for tenant, hour, entries in self._archiving:
            self.store.mark_archived(tenant, hour, entries)
        self._archiving = []
        self._bundle_open = False

    def process(self, message: Any, types: dict[str, dict[str, str]] | None = None):
        attributes = message.attributes or {}
        try:
            protocol = message_protocol(attributes)
            tenant = attributes.get("tenant") or DEFAULT_TENANT
            if not is_valid_tenant(tenant):  # the receiver's rule, checked again: it becomes a path
                raise ConversionError(f"invalid tenant attribute {tenant!r}: use {TENANT_RULE}")
            if types and tenant in types and types[tenant] is not self._types_seen.get(tenant):
                self.store.update(tenant, types[tenant])
                self._types_seen[tenant] = types[tenant]
            # UTF-8 names: whatever the receiver accepted must be archived, never dead-lettered for its names
            decoded = codec.decode(message.data, protocol, MAX_DECOMPRESSED, NameValidation.UTF8,
                                   table=self.converter.table(tenant))
            partitions = self.format.convert(self.converter, decoded.batch, tenant)
            seen = seen_ms(message)
            hour = seen // 3_600_000
            entries = self.store.unarchived(tenant, hour, self.converter.metadata(decoded.batch, tenant, hour))
        except (RemoteWriteError, ConversionError) as exc:
            self.dead.inc()
            record = DeadLetter.of_message(message, f"{type(exc).__name__}: {exc}")
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, record.to_json())
            return
        except Exception as exc:  # a message that breaks our code must not fail every run it is in
            logging.getLogger(__name__).exception("dead-lettering a message that failed conversion")
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, DeadLetter.of_message(message, f"internal {exc!r}").to_json())
            return
        self.samples.inc(decoded.counts.samples)
        for partition, block in partitions.items():
            self.lines.inc(block.lines)
            # packed by the format (ndjson: gzipped lines; Parquet: Arrow blocks), so the group-by-partition
            # carries the format's smaller bytes; a plain tuple key has a deterministic coder
            yield tuple(partition), block
        if entries:
            self._archiving.append((tenant, hour, entries))
            key = tuple(hour_partition(tenant, hour))
            for family, (number, help_text, unit) in entries.items():
                record = MetadataRecord(family, seen, TYPE_NAMES.get(number, "unknown"), help_text, unit)
                yield beam.pvalue.TaggedOutput(METADATA, (key, tuple(record)))


class WriteArchiveFiles(beam.DoFn):
    """(Partition, [PackedBlock, ...]) -> one or more finalised files of the archive format in that partition.

    `file_label(window, pane)` names the files: unique per window and pane, so a re-fired pane adds a
    file and never overwrites one. At most ceil(lines / max_lines_per_file) files per partition
    and pane: the file count per window is bounded.
    """

    def __init__(self, archive_path: str, file_label: Callable[[Any, Any], str], max_lines_per_file: int = 5_000_000,
                 archive_format: str = DEFAULT_FORMAT):
        self.archive_path = archive_path
        self.format = get_format(archive_format)
        self.file_label = file_label
        self.max_lines = max_lines_per_file
        self.files = Metrics.counter("archive", "files_written")

    def process(self, element: tuple[tuple[str, str, str], Iterable[PackedBlock]], window=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam) -> Iterator[str]:
        key, chunks = element
        label = self.file_label(window, pane)
        directory = FileSystems.join(self.archive_path, *partition_parts(Partition(*key)))
        temp_dir = FileSystems.join(self.archive_path, ".tmp")
        shard, batch, lines = 0, [], 0
        for block in chunks:
            batch.append(block)
            lines += block.lines
            if lines >= self.max_lines:
                yield self._flush(directory, temp_dir, label, shard, batch)
                shard, batch, lines = shard + 1, [], 0
        if batch:
            yield self._flush(directory, temp_dir, label, shard, batch)

    def _flush(self, directory: str, temp_dir: str, label: str, shard: int, batch: list[PackedBlock]) -> str:
        path = FileSystems.join(directory, self.format.file_name(label, shard))
        chunks, compression = self.format.file_chunks(batch)
        write_atomically(path, temp_dir, chunks, compression)
        self.files.inc()
        return path


class WriteMetadataFiles(beam.DoFn):
    """(Partition, [MetadataRecord, ...]) -> one companion file ARCHIVE/_metadata/<partition>/part-<label>-0000.*;
    the same metadata seen more than once (several workers, a retried bundle) is written once, earliest."""

    def __init__(self, archive_path: str, file_label: Callable[[Any, Any], str],
                 archive_format: str = DEFAULT_FORMAT):
        self.archive_path = archive_path
        self.format = get_format(archive_format)
        self.file_label = file_label
        self.files = Metrics.counter("archive", "metadata_files_written")

    def process(self, element: tuple[tuple[str, str, str], Iterable[tuple]], window=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam) -> Iterator[str]:
        key, records = element
        earliest: dict[tuple[str, str, str, str], int] = {}
        for name, ms, kind, help_text, unit in records:
            key_ = (name, kind, help_text, unit)
            earliest[key_] = min(ms, earliest.get(key_, ms))
        unique = [MetadataRecord(k[0], ms, *k[1:]) for k, ms in earliest.items()]
        directory = FileSystems.join(self.archive_path, METADATA_DIR, *partition_parts(Partition(*key)))
        path = FileSystems.join(directory, self.format.file_name(self.file_label(window, pane), 0))
        write_atomically(path, FileSystems.join(self.archive_path, ".tmp"), [self.format.encode_metadata(unique)],
                         UNCOMPRESSED)
        self.files.inc()
        yield path


class WriteDeadLetters(beam.DoFn):
    """Dead-letter JSON lines -> one file per window/pane under the dead-letter path."""

    def __init__(self, dead_letter_path: str, file_label: Callable[[Any, Any], str]):
        self.dead_letter_path = dead_letter_path
        self.file_label = file_label

    def process(self, element: tuple[None, Iterable[str]], window=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam) -> Iterator[str]:
        _, records = element
        path = write_dead_letters(self.dead_letter_path, records, label=self.file_label(window, pane))
        if path:
            yield path


class ArchiveMessages(beam.PTransform):
    """Messages -> archive files and dead-letter files. Outputs the written paths."""

    def __init__(self, archive_path: str, dead_letter_path: str, file_label: Callable[[Any, Any], str],
                 max_lines_per_file: int = 5_000_000, archive_format: str = DEFAULT_FORMAT,
                 metadata: Shared | None = None, window_types: bool = True) -> None:
        super().__init__()
        # True (bounded runs): the types of the whole run's metadata-only messages reach every message of the
        # run, a side input that costs no wait in a batch. False (streaming): a per-window side input would
        # hold every message of a window until the window closes; types come from the worker's store instead.
        self.window_types = window_types
        self.metadata = metadata or Shared()
        self.archive_format = archive_format
        self.archive_path = archive_path
        self.dead_letter_path = dead_letter_path
        self.file_label = file_label
        self.max_lines_per_file = max_lines_per_file

    def expand(self, messages):
        # step names are kept as they were: a streaming job's update matches steps by name
        if self.window_types:
            types = (messages
                     | "MetadataOnly" >> beam.Filter(lambda message: is_metadata_only(message.attributes or {}))
                     | "ExtractTypes" >> beam.ParDo(ExtractMetadataTypes())
                     | "MergeTypes" >> beam.CombineGlobally(MergeTypes()).without_defaults())
            converted = messages | "DecodeToLines" >> beam.ParDo(
                DecodeToRecords(self.metadata, self.archive_format),
                types=beam.pvalue.AsSingleton(types, default_value={})
            ).with_outputs(DEAD_LETTER, METADATA, main="lines")
        else:
            converted = messages | "DecodeToLines" >> beam.ParDo(
                DecodeToRecords(self.metadata, self.archive_format, warm_types_from=self.archive_path)
            ).with_outputs(DEAD_LETTER, METADATA, main="lines")
        files = (converted.lines
                 | "GroupByPartition" >> beam.GroupByKey()
                 | "WriteFiles" >> beam.ParDo(WriteArchiveFiles(self.archive_path, self.file_label,
                                                                self.max_lines_per_file, self.archive_format)))
        dead = (converted[DEAD_LETTER]
                | "KeyDeadLetters" >> beam.Map(lambda record: (None, record))
                | "GroupDeadLetters" >> beam.GroupByKey()
                | "WriteDeadLetters" >> beam.ParDo(WriteDeadLetters(self.dead_letter_path, self.file_label)))
        metadata = (converted[METADATA]
                    | "GroupMetadata" >> beam.GroupByKey()
                    | "WriteMetadata" >> beam.ParDo(WriteMetadataFiles(self.archive_path, self.file_label,
                                                                       self.archive_format)))
        return (files, dead, metadata) | "AllPaths" >> beam.Flatten()
