"""What a restore selects: tenants, a time range and Prometheus series selectors; and archive records
turned into the columns and series the sink's request builder takes (no request bytes in between).

Selectors are parsed by promql-parser (the PromQL grammar, not a hand-written one); regex matchers
are anchored as in Prometheus (`=~"a.*"` must match the whole value). Several `--match` selectors
are OR-ed, the matchers inside one are AND-ed, as in Prometheus' /api/v1/series.
"""

from __future__ import annotations

import array
import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

import numpy as np
import promql_parser

from transforms.core.archive.records import EXEMPLAR, HISTOGRAM, SAMPLE_KINDS, Sample, SampleColumns
from transforms.core.metadata import TYPE_NUMBERS, FamilyMetadata, family_candidates
from transforms.core.wire import bodies
from transforms.core.wire.convert import label_bytes
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2

HOUR_MS = 3_600_000
DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


class SelectionError(ValueError):
    """A selector or time the user gave that cannot be used (one line, exit 2)."""


@dataclasses.dataclass(frozen=True)
class Matcher:
    name: str
    op: str  # = != =~ !~
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        found = labels.get(self.name, "")  # a missing label matches as the empty string, as in Prometheus
        if self.op == "=":
            return found == self.value
        if self.op == "!=":
            return found != self.value
        hit = self.pattern.fullmatch(found) is not None  # type: ignore[union-attr]
        return hit if self.op == "=~" else not hit


def parse_selector(text: str) -> tuple[Matcher, ...]:
    """'{job="node",__name__=~"node_cpu.*"}' or 'up{job!="x"}' -> its matchers."""
    try:
        expr = promql_parser.parse(text)
    except Exception as exc:  # the parser raises its own ValueError subclasses with a position
        raise SelectionError(f"--match {text!r}: {exc}") from exc
    if not isinstance(expr, promql_parser.VectorSelector) or expr.offset is not None or expr.at is not None:
        raise SelectionError(f"--match {text!r}: expected a series selector such as '{{job=\"node\"}}'")
    matchers = []
    if expr.name:
        matchers.append(Matcher("__name__", "=", expr.name))
    for m in expr.matchers.matchers:
        op = _OPS[str(m.op)]
        pattern = None
        if op in ("=~", "!~"):
            try:
                pattern = re.compile(m.value)
            except re.error as exc:
                raise SelectionError(f"--match {text!r}: regex {m.value!r}: {exc}") from exc
        matchers.append(Matcher(m.name, op, m.value, pattern))
    return tuple(matchers)


def parse_time(text: str, flag: str) -> int:
    """RFC 3339 ('2026-11-25T09:00:00Z', offsets allowed), a UTC date ('2026-11-25': its midnight UTC) or Unix
    seconds -> epoch ms."""
    try:
        return round(float(text) * 1000)
    except ValueError:
        pass
    forms = "2026-11-25T09:00:00Z, 2026-11-25T09:00:00+01:00, 2026-11-25 (midnight UTC) or Unix seconds"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SelectionError(f"{flag} {text!r}: not a time; use {forms}") from None
    if DATE_ONLY.match(text):
        moment = moment.replace(tzinfo=UTC)
    if moment.tzinfo is None:
        raise SelectionError(f"{flag} {text!r} has no time zone; add Z (UTC) or an offset such as +01:00, "
                             f"e.g. {text}Z")
    return round(moment.timestamp() * 1000)


@dataclasses.dataclass(frozen=True)
class Selection:
    start_ms: int | None = None
    end_ms: int | None = None  # inclusive, as Prometheus' query ranges
    tenants: frozenset[str] | None = None
    selectors: tuple[tuple[Matcher, ...], ...] = ()

    @classmethod
    def parse(cls, start: str | None, end: str | None, tenants: Sequence[str] | None,
              matches: Sequence[str] | None) -> Selection:
        start_ms = parse_time(start, "--start") if start else None
        end_ms = parse_time(end, "--end") if end else None
        if start_ms is not None and end_ms is not None and end_ms < start_ms:
            raise SelectionError(f"--end {end} is before --start {start}")
        return cls(start_ms, end_ms, frozenset(tenants) if tenants else None,
                   tuple(parse_selector(m) for m in matches or ()))

    def keeps_partition(self, tenant: str, date: str, hour: str) -> bool:
        """Partition pruning: a tenant=/date=/hour= folder is read only if it can hold selected samples."""
        if self.tenants is not None and tenant not in self.tenants:
            return False
        try:
            first = round(datetime.fromisoformat(f"{date}T{hour}:00:00+00:00").timestamp() * 1000)
        except ValueError:
            return True  # not one of ours: read it, and let its records say what it holds
        if self.start_ms is not None and first + HOUR_MS <= self.start_ms:
            return False
        return not (self.end_ms is not None and first > self.end_ms)

    def keeps_time(self, ms: int) -> bool:
        return (self.start_ms is None or ms >= self.start_ms) and (self.end_ms is None or ms <= self.end_ms)

    def keeps_series(self, labels: Mapping[str, str]) -> bool:
        return not self.selectors or any(all(m.matches(labels) for m in sel) for sel in self.selectors)


Labels = tuple[tuple[str, str], ...]


@dataclasses.dataclass
class Restored:
    """One file's selected points, in the shape the sink's request builder takes them
    (`RequestBuilder.shard_selected`), with no request bytes in between:

    - float samples of series without histograms or exemplars as columns: per sample its series (an index
      into `keys`/`labels`), timestamp, value bits and start timestamp (0: none; `starts` is None when no
      sample has one);
    - series carrying histograms or exemplars whole, as 1.0-shaped protobuf (`slow`), their float samples
      included; start timestamps ride along as unknown fields (transforms.core.wire.convert.samples_only),
      which a 2.0 sink gets back and a 1.0 sink drops;
    - a metadata entry per metric family with selected points.
    """

    keys: list[bytes]  # the 1.0 label bytes of each series of the file that the selection keeps
    labels: list[Labels]  # and its labels, __name__ included, sorted
    sample_series: np.ndarray  # uint32 per float sample
    timestamps: np.ndarray  # int64
    values: np.ndarray  # uint64: the float's bits (NaN payloads and the stale marker kept exactly)
    starts: np.ndarray | None  # int64, 0 = none
    slow: list[tuple[int, remote_v1_pb2.TimeSeries]]  # (series index, the whole series)
    metadata: list[remote_v1_pb2.MetricMetadata]
    series: list[bytes]  # the 1.0 label bytes of each series with selected points
    samples: int  # float samples + native histograms (what counts against a sink's max samples)
    first_ms: int | None
    last_ms: int | None

    @functools.cached_property
    def request(self) -> remote_v1_pb2.WriteRequest:
        """Everything as one 1.0 request (start timestamps as Sample's unknown field 3, as the sinks carry
        them), float series first, then the others, then the metadata: for --dry_run and the tests."""
        order = np.argsort(self.sample_series, kind="stable")
        body = bodies.encode_v1(self.keys, self.sample_series[order], self.timestamps[order], self.values[order], 0,
                                len(order), starts=None if self.starts is None else self.starts[order])
        out = remote_v1_pb2.WriteRequest.FromString(body)
        out.timeseries.extend(series for _, series in self.slow)
        out.metadata.extend(self.metadata)
        return out


class _Series:
    """The series of one file: float samples as columns, histograms and exemplars as protobuf."""

    def __init__(self, selection: Selection) -> None:
        self.selection = selection
        self.keys: list[bytes] = []  # 1.0 label bytes per series
        self.labels: list[tuple[tuple[str, str], ...]] = []  # and its labels, __name__ included, sorted
        self.index: dict[tuple[str, tuple[tuple[str, str], ...]], int | None] = {}  # None: not selected
        self.sample_series = array.array("I")  # float samples met one by one (NDJSON)
        self.stamps = array.array("q")
        self.values = array.array("d")
        self.starts = array.array("q")
        self.blocks: list[tuple[np.ndarray, ...]] = []  # and in columns (Parquet)
        self.slow: dict[int, remote_v1_pb2.TimeSeries] = {}  # series carrying histograms or exemplars
        self.histogram_starts: dict[int, list[int]] = {}  # per slow series, per histogram
        self.types: dict[str, str] = {}
        self.count = 0
        self.first: int | None = None
        self.last: int | None = None

    def find(self, name: str, labels: Sequence[tuple[str, str]]) -> int | None:
        key = (name, tuple(labels))
        if key not in self.index:
            full = dict(labels)
            full["__name__"] = name
            self.index[key] = None
            if self.selection.keeps_series(full):
                self.index[key] = len(self.keys)
                ordered = tuple(sorted(full.items()))
                self.keys.append(label_bytes(ordered))
                self.labels.append(ordered)
        return self.index[key]

    def proto(self, series: int) -> remote_v1_pb2.TimeSeries:
        found = self.slow.get(series)
        if found is None:
            found = self.slow[series] = remote_v1_pb2.TimeSeries.FromString(self.keys[series])
            self.histogram_starts[series] = []
        return found

    def seen(self, first: int, last: int, count: int) -> None:
        self.count += count
        self.first = first if self.first is None or first < self.first else self.first
        self.last = last if self.last is None or last > self.last else self.last

    def add_samples(self, samples: Iterable[Sample]) -> None:
        last_key: tuple[str, Sequence[tuple[str, str]]] | None = None
        out: int | None = None
        keeps_time, types = self.selection.keeps_time, self.types
        for sample in samples:
            if last_key is None or not (sample.labels is last_key[1] or sample.labels == last_key[1]) \
                    or sample.name != last_key[0]:
                # rows come grouped by series (Parquet sorts them): the key is built once per run, not per sample
                last_key = (sample.name, sample.labels)
                out = self.find(sample.name, sample.labels)
            if out is None or not keeps_time(sample.ms):
                continue
            kind = sample.kind
            if kind == EXEMPLAR:
                value, pairs = sample.payload
                ex = self.proto(out).exemplars.add(timestamp=sample.ms, value=value)
                ex.labels.extend(remote_v1_pb2.Label(name=n, value=v) for n, v in pairs)
                continue
            if kind == HISTOGRAM:
                self.proto(out).histograms.add(timestamp=sample.ms, **sample.payload)
                self.histogram_starts[out].append(sample.start)
                if types.get(sample.name, "gauge") == "gauge":  # histogram wins over gauge, whichever came first
                    types[sample.name] = "histogram"
            else:
                self.sample_series.append(out)
                self.stamps.append(sample.ms)
                self.values.append(sample.payload)
                self.starts.append(sample.start)
                if types.get(sample.name, "gauge") == "gauge":  # gauge is also what an untyped series is archived as
                    types[sample.name] = kind
            self.seen(sample.ms, sample.ms, 1)

    def add_columns(self, cols: SampleColumns) -> None:
        """Float rows selected and kept as columns (Python per series run, not per row); others one by one."""
        run_series = np.asarray([-1 if s is None else s for s in map(self.find, cols.names, cols.labels)], np.int64)
        if len(cols.stamps):
            owner = run_series[cols.row_run]
            keep = (cols.kinds > 0) & (owner >= 0)
            if self.selection.start_ms is not None:
                keep &= cols.stamps >= self.selection.start_ms
            if self.selection.end_ms is not None:
                keep &= cols.stamps <= self.selection.end_ms
            if keep.any():
                stamps = cols.stamps[keep]
                starts = np.zeros(len(stamps), np.int64) if cols.starts is None else cols.starts[keep]
                self.blocks.append((owner[keep].astype(np.uint32), stamps, cols.values[keep], starts))
                self.seen(int(stamps.min()), int(stamps.max()), int(keep.sum()))
                # counter wins over gauge (also what an untyped series is archived as), per metric name
                pairs = np.flatnonzero(np.bincount(cols.row_run[keep] * 4 + cols.kinds[keep]))  # (run, kind) seen
                for pair in pairs.tolist():
                    run, kind = divmod(pair, 4)
                    name = cols.names[run]
                    if self.types.get(name, "gauge") == "gauge":
                        self.types[name] = SAMPLE_KINDS[kind - 1]
        self.add_samples(cols.others)

    def metadata(self, known: Mapping[str, FamilyMetadata]) -> list[remote_v1_pb2.MetricMetadata]:
        """An entry per metric family with selected points: the archived metadata (type, help, unit) where a
        record names the family (`known`), else the type the samples were archived as."""
        entries: dict[str, remote_v1_pb2.MetricMetadata] = {}
        fallback: dict[str, str] = {}
        for name, kind in self.types.items():
            family = next((f for f in family_candidates(name) if f in known), None)
            if family is None:
                fallback[name] = kind
            elif family not in entries:
                number, help_text, unit = known[family]
                entries[family] = remote_v1_pb2.MetricMetadata(type=number, metric_family_name=family,
                                                               help=help_text, unit=unit)
        for name, kind in fallback.items():
            entries.setdefault(name, remote_v1_pb2.MetricMetadata(type=TYPE_NUMBERS[kind], metric_family_name=name))
        return [entries[family] for family in sorted(entries)]

    def selected(self, known: Mapping[str, FamilyMetadata]) -> Restored:
        """Float samples as columns (those of series with histograms or exemplars join their series)."""
        owner = np.concatenate([np.frombuffer(self.sample_series, np.uint32), *(b[0] for b in self.blocks)])
        stamps = np.concatenate([np.frombuffer(self.stamps, np.int64), *(b[1] for b in self.blocks)])
        values = np.concatenate([np.frombuffer(self.values, np.float64), *(b[2] for b in self.blocks)])
        starts = np.concatenate([np.frombuffer(self.starts, np.int64), *(b[3] for b in self.blocks)])
        if self.slow:  # a series with histograms or exemplars carries its float samples along, in one message
            slow = np.isin(owner, np.fromiter(self.slow, np.uint32))
            picked = np.flatnonzero(slow)
            by_series: dict[int, remote_v2_pb2.TimeSeries] = {}
            for series, ms, value, start in zip(owner[picked].tolist(), stamps[picked].tolist(),
                                                values[picked].tolist(), starts[picked].tolist(), strict=True):
                carrier = by_series.get(series)
                if carrier is None:
                    carrier = by_series[series] = remote_v2_pb2.TimeSeries()
                carrier.samples.add(timestamp=ms, value=value, start_timestamp=start)
            for series, carrier in by_series.items():  # 2.0's Sample is 1.0's plus field 3: it merges (convert.py)
                self.slow[series].MergeFromString(carrier.SerializeToString())
            for series, histogram_starts in self.histogram_starts.items():
                for histogram, start in zip(self.slow[series].histograms, histogram_starts, strict=True):
                    if start:  # 2.0's field 17, unknown to 1.0's Histogram, kept for a 2.0 sink
                        histogram.MergeFromString(remote_v2_pb2.Histogram(start_timestamp=start).SerializeToString())
            owner, stamps, values, starts = owner[~slow], stamps[~slow], values[~slow], starts[~slow]
        sent = sorted({*np.flatnonzero(np.bincount(owner, minlength=len(self.keys))).tolist(), *self.slow})
        return Restored(self.keys, self.labels, owner, stamps, values.view(np.uint64),
                        starts if starts.any() else None, [(i, self.slow[i]) for i in sorted(self.slow)],
                        self.metadata(known), [self.keys[i] for i in sent], self.count, self.first, self.last)


def to_request(points: Iterable[Sample] | SampleColumns, selection: Selection,
               metadata: Mapping[str, FamilyMetadata] | None = None) -> Restored:
    """Selected points -> the messages for the sinks (exact values, histograms, exemplars, start timestamps),
    with a metadata entry per metric family: `metadata` (family -> type, help, unit, from the archive's
    metadata records) where it names the family, else the type the samples were archived as."""
    table = _Series(selection)
    if isinstance(points, SampleColumns):
        table.add_columns(points)
    else:
        table.add_samples(points)
    return table.selected(metadata or {})

