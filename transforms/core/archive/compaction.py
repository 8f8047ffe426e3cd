"""Compaction of closed hour partitions, the pure part: the reader rule, the plan, and the compacted table.

A partition's many window files (part-*.ndjson.gz | part-*.parquet) become few `compacted-<id>-<n>.parquet`
files with the archive's Parquet schema, sorted by series (name, then labels), then time; in a large partition
each metric's rows by 10-minute slices of the hour first (compact_table). The job
(pipeline/compact.py) follows a four-step protocol, so that a reader sees the old file set or the new one,
never both and never neither, and a rerun after a crash at any point finishes the job:

1. write the marker `_compaction-<id>.json` naming the compacted files to come and every input they replace
   (id: a digest of the sorted input names);
2. write each compacted file atomically;
3. delete the inputs;
4. delete the marker.

`live_files` is the one reader rule: while a marker's compacted files all exist, its inputs are ignored;
otherwise its compacted files are.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms.core.archive import parquet
from transforms.core.archive.records import RecordError

MARKER_PREFIX = "_compaction-"
MARKER_SUFFIX = ".json"
COMPACTED_PREFIX = "compacted-"
COMPACTED_SUFFIX = ".parquet"
INPUT_SUFFIXES = (".ndjson.gz", ".parquet")
# Measured in docs/compaction.md (bench/compaction.py): with 128 k-row groups a one-metric read decodes ~8x
# fewer rows than with 1 M (a group is decoded whole, labels map included) and the whole-hour scan runs as fast.
ROW_GROUP_ROWS = 32_768
ROWS_PER_FILE = 16_777_216  # an hour of ~70 k series scraped every 15 s in one file
# A partition of at least SLICE_MIN_ROWS rows is sorted by name, then SLICE_MS of its hour, then series and time
# (compact_table): a query of the last minutes decodes its metric's slice, not every group of its hour.
SLICE_MS = 600_000
SLICE_MIN_ROWS = 16 * ROW_GROUP_ROWS
HOUR_MS = 3_600_000
BLOOM_FPP = 0.01
_TIME_BITS = 28  # ms within a partition in the packed sort key: 74 hours
_ID = re.compile(r"^[0-9a-f]{16}$")
_KIND_RANK = pa.array(["counter", "gauge", "native_histogram", "exemplar"])  # float samples, then histograms...


class CompactionError(ValueError):
    """A marker file that is not one of ours, or a partition that cannot be compacted as it is."""


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def compaction_id(inputs: Iterable[str]) -> str:
    """The same input set always gets the same id, so a rerun after a crash names the same files."""
    return hashlib.sha256("\n".join(sorted(basename(p) for p in inputs)).encode()).hexdigest()[:16]


def marker_name(compaction: str) -> str:
    return f"{MARKER_PREFIX}{compaction}{MARKER_SUFFIX}"


def output_name(compaction: str, number: int) -> str:
    return f"{COMPACTED_PREFIX}{compaction}-{number:04d}{COMPACTED_SUFFIX}"


def is_marker(path: str) -> bool:
    name = basename(path)
    return name.startswith(MARKER_PREFIX) and name.endswith(MARKER_SUFFIX)


def is_compacted(path: str) -> bool:
    name = basename(path)
    return name.startswith(COMPACTED_PREFIX) and name.endswith(COMPACTED_SUFFIX)


@dataclasses.dataclass(frozen=True)
class Marker:
    """One compaction in flight: the compacted files it writes and the inputs they replace (file names)."""

    id: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @classmethod
    def new(cls, inputs: Iterable[str], files: int) -> Marker:
        names = tuple(sorted(basename(p) for p in inputs))
        if not names:
            raise CompactionError("a compaction needs at least one input file")
        if files < 1:
            raise CompactionError("a compaction writes at least one file")
        compaction = compaction_id(names)
        return cls(compaction, names, tuple(output_name(compaction, n) for n in range(files)))

    @property
    def name(self) -> str:
        return marker_name(self.id)

    def to_json(self) -> bytes:
        return json.dumps({"id": self.id, "outputs": list(self.outputs), "inputs": list(self.inputs)},
                          indent=1).encode()

    @classmethod
    def from_json(cls, stored: bytes, path: str) -> Marker:
        """A marker read back; CompactionError naming `path` when it is not one."""
        try:
            fields = json.loads(stored)
            marker = cls(fields["id"], tuple(fields["inputs"]), tuple(fields["outputs"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise CompactionError(f"{path}: not a compaction marker ({type(exc).__name__}: {exc})") from None
        names = (*marker.inputs, *marker.outputs)
        if not (isinstance(marker.id, str) and _ID.match(marker.id) and marker.outputs and marker.inputs
                and all(isinstance(n, str) and n and "/" not in n for n in names)):
            raise CompactionError(f"{path}: not a compaction marker (bad id or file names)")
        if basename(path) != marker.name:
            raise CompactionError(f"{path}: names compaction {marker.id}, not the one its file name says")
        return marker


def ignored_files(names: Iterable[str], markers: Iterable[Marker]) -> set[str]:
    """The file names the reader rule hides: a complete compaction's inputs, an incomplete one's outputs."""
    present = {basename(n) for n in names}
    hidden: set[str] = set()
    for marker in markers:
        hidden.update(marker.inputs if all(o in present for o in marker.outputs) else marker.outputs)
    return hidden


def live_files(names: Sequence[str], markers: Mapping[str, Marker]) -> list[str]:
    """The reader rule, for the data files of one partition (paths or bare names) and its markers (by any key):
    while a marker's compacted files all exist its inputs are ignored, otherwise its compacted files are.
    Before step 2 completes readers see the inputs; after, the compacted files; never both, never neither."""
    hidden = ignored_files(names, markers.values())
    return [n for n in names if basename(n) not in hidden]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to do in one partition, in this order: finish the complete compactions (delete inputs, then the
    marker), undo the incomplete ones (delete their partial outputs, then the marker), then compact `inputs`
    (none: the partition is compacted already, or empty)."""

    finish: tuple[Marker, ...]
    undo: tuple[Marker, ...]
    inputs: tuple[str, ...]


def plan_partition(names: Sequence[str], markers: Mapping[str, Marker]) -> Plan:
    """The plan for a partition holding the data files `names` and the `markers` (both as found)."""
    present = {basename(n) for n in names}
    complete = [m for m in markers.values() if all(o in present for o in m.outputs)]
    incomplete = [m for m in markers.values() if m not in complete]
    live = live_files(sorted(names), markers)
    ids = {basename(n)[len(COMPACTED_PREFIX):][:16] for n in live if is_compacted(n)}
    done = all(is_compacted(n) for n in live) and len(ids) <= 1
    return Plan(tuple(sorted(complete, key=lambda m: m.id)), tuple(sorted(incomplete, key=lambda m: m.id)),
                () if done else tuple(live))


def partition_closed(date: str, hour: str, before_ms: int) -> bool:
    """A tenant=/date=/hour= partition whose hour ended at or before `before_ms` (unparseable: never closed)."""
    try:
        first = datetime.fromisoformat(f"{date}T{hour}:00:00+00:00").timestamp() * 1000
    except ValueError:
        return False
    return first + 3_600_000 <= before_ms


def file_table(name: str, stored: bytes) -> pa.Table:
    """One archive file (as stored) as a table of the Parquet schema; RecordError when it is not readable."""
    if name.endswith(".parquet"):
        try:
            return parquet.read_table(stored).select(parquet.SCHEMA.names).cast(parquet.SCHEMA)
        except (RecordError, pa.ArrowException) as exc:
            raise RecordError(f"{name}: {exc}") from None
    if name.endswith(".ndjson.gz"):
        try:
            text = gzip.decompress(stored).decode()  # every member: the pipeline writes one per block
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise RecordError(f"{name}: not a readable gzip file: {exc}") from None
        try:
            return parquet.encode_table([line for line in text.split("\n") if line])
        except (ValueError, KeyError, TypeError) as exc:
            raise RecordError(f"{name}: a record not in the archive's shape: {type(exc).__name__}: {exc}") from None
    raise RecordError(f"{name}: not an archive file (.ndjson.gz or .parquet)")


def _escaped(strings: pa.Array) -> pa.Array:
    """`strings` with \\, \x00, \x01 and \x02 escaped, so they can be joined with those as separators;
    done on the distinct strings only (label names and values repeat on every row of a series)."""
    encoded = pc.dictionary_encode(strings)
    distinct = encoded.dictionary
    for old, new in (("\\", "\\\\"), ("\x00", "\\0"), ("\x01", "\\1"), ("\x02", "\\2")):
        distinct = pc.replace_substring(distinct, old, new)
    return distinct.take(encoded.indices)


def series_key(table: pa.Table) -> pa.Array:
    """Per row, a string that orders as the series' (name, sorted label pairs) tuple does, computed in C.
    Separators \\x00 (between pairs), \\x01 (name/value) and \\x02 (after the metric name) sort below every
    escaped character."""
    labels = table.column("labels").combine_chunks()
    pairs = pc.binary_join_element_wise(_escaped(labels.keys), _escaped(labels.items), "\x01")
    joined = pc.binary_join(pa.ListArray.from_arrays(labels.offsets, pairs), "\x00")
    return pc.binary_join_element_wise(_escaped(table.column("name").combine_chunks()), joined, "\x02")


def compact_table(tables: Sequence[pa.Table], slice_rows: int = SLICE_MIN_ROWS) -> pa.Table:
    """Every row of `tables`, sorted by series (name, then labels), then time, then kind; a stable sort, so
    rows equal in all of these keep their input order and nothing is dropped or merged.

    With `slice_rows` rows or more, each metric's rows are cut by time into slices of SLICE_MS: sorted by name,
    then slice, then series, then time. Row groups then hold one metric's slice, so a query of a few minutes
    skips the metric's other slices by the time statistics, as it skips other metrics by the name's.

    The string key is compared once per distinct series (its rank), the rows are sorted on integers."""
    table = pa.concat_tables([t.select(parquet.SCHEMA.names).cast(parquet.SCHEMA) for t in tables]) \
        if tables else parquet.SCHEMA.empty_table()
    if not len(table):
        return table
    series = pc.dictionary_encode(series_key(table))
    rank = pc.rank(series.dictionary, sort_keys="ascending", tiebreaker="dense")  # distinct keys: dense = order
    ranks = rank.take(series.indices).to_numpy().astype(np.uint64)
    stamps = table.column("timestamp").cast(pa.int64()).to_numpy()
    kinds = pc.fill_null(pc.index_in(table.column("type"), value_set=_KIND_RANK), 3).to_numpy().astype(np.uint64)
    offset = stamps - stamps.min()
    if offset.max() < 1 << _TIME_BITS and len(rank) < 1 << (62 - _TIME_BITS):
        # an hour's rows: one uint64 per row (series rank, ms into the partition, kind), sorted stably in numpy,
        # ~10x Arrow's sort on three keys
        packed = (ranks << np.uint64(_TIME_BITS + 2)) | (offset.astype(np.uint64) << np.uint64(2)) | kinds
        order = np.argsort(packed, kind="stable")
    else:  # a partition spanning days (not one of the pipeline's): the general sort
        keys = pa.table({"series": ranks, "time": stamps, "kind": kinds})
        order = pc.sort_indices(keys, sort_keys=[("series", "ascending"), ("time", "ascending"),
                                                 ("kind", "ascending")]).to_numpy()
    if len(table) >= slice_rows:
        # a second stable sort on (name, slice) keeps the series-then-time order within each metric's slice
        names = pc.dictionary_encode(table.column("name").combine_chunks())
        name_rank = pc.rank(names.dictionary, sort_keys="ascending", tiebreaker="dense").take(names.indices)
        slices = (stamps - stamps.min() // HOUR_MS * HOUR_MS) // SLICE_MS
        outer = (name_rank.to_numpy().astype(np.int64)[order] << 32) | slices[order]
        order = order[np.argsort(outer, kind="stable")]
    return table.take(pa.array(order))


def file_count(rows: int, rows_per_file: int = ROWS_PER_FILE) -> int:
    return max(1, -(-rows // rows_per_file))


def compacted_files(table: pa.Table, rows_per_file: int = ROWS_PER_FILE,
                    row_group_rows: int = ROW_GROUP_ROWS) -> list[bytes]:
    """A sorted table (compact_table's) as the bytes of file_count(len(table)) Parquet files: the archive's
    schema and encodings, zstd, statistics and a page index on name and time, a bloom filter on name, and the
    sort on name declared."""
    out = []
    for first in range(0, max(len(table), 1), rows_per_file):
        part = table.slice(first, rows_per_file)
        names = pc.count_distinct(part.column("name")).as_py() if len(part) else 1
        sink = io.BytesIO()
        pq.write_table(part, sink, row_group_size=row_group_rows, compression=parquet.COMPRESSION,
                       compression_level=parquet.COMPRESSION_LEVEL, use_dictionary=parquet.DICTIONARY_COLUMNS,
                       write_statistics=["name", "timestamp", "type"], write_page_index=True, store_schema=False,
                       sorting_columns=[pq.SortingColumn(0)],
                       bloom_filter_options={"name": {"ndv": max(names, 1), "fpp": BLOOM_FPP}})
        out.append(sink.getvalue())
    return out
