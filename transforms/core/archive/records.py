"""Archive records read back: values, timestamps and native histograms in their exact wire form.

A record is one sample in the metric_to_log shape (as a dict, whatever format stored it). This module
is the inverse of transforms/core/archive/metric_to_log.py: both archive formats and the restore job use it, so
there is one home for "what does this record mean".
"""

from __future__ import annotations

import calendar
import dataclasses
import json
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from transforms.core.protocol import PROMETHEUS_NAN, RESET_HINTS, STALE_NAN, format_ms
from transforms.core.wire import line_columns

SAMPLE_KINDS = ("counter", "gauge")
HISTOGRAM = "native_histogram"
EXEMPLAR = "exemplar"
# Metric metadata (type, help, unit) goes to a companion tree beside the partitions, never among the samples:
# ARCHIVE/_metadata/tenant=T/date=D/hour=H/part-*.{ndjson.gz,parquet}
METADATA_DIR = "_metadata"
_FIXED = {"+Inf": float("inf"), "-Inf": float("-inf"), "StaleNaN": STALE_NAN, "NaN": PROMETHEUS_NAN}


class RecordError(ValueError):
    """A record that is not in the archive's shape (a corrupt or foreign file)."""


def decode_value(value: Any) -> float:
    """The exact float64 of an encoded value (metric_to_log.encode_value's inverse, NaN bits included)."""
    if isinstance(value, str):
        fixed = _FIXED.get(value)
        if fixed is not None:
            return fixed
        if value.startswith("NaN:0x") and len(value) == 22:
            return struct.unpack("<d", struct.pack("<Q", int(value[6:], 16)))[0]
        raise RecordError(f"unknown special value {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(f"value {value!r} is not a number")
    return float(value)


class Timestamps:
    """RFC 3339 'YYYY-MM-DDTHH:MM:SS.mmmZ' <-> epoch ms, caching the per-second part."""

    def __init__(self) -> None:
        self._seconds: dict[str, int] = {}

    def to_ms(self, text: str) -> int:
        if len(text) < 24 or text[-1] != "Z" or text[-5] != ".":
            raise RecordError(f"timestamp {text!r} is not YYYY-MM-DDTHH:MM:SS.mmmZ")
        prefix = text[:-5]
        seconds = self._seconds.get(prefix)
        if seconds is None:
            try:
                seconds = calendar.timegm((int(prefix[:-15]), int(prefix[-14:-12]), int(prefix[-11:-9]),
                                           int(prefix[-8:-6]), int(prefix[-5:-3]), int(prefix[-2:]), 0, 0, 0))
            except ValueError as exc:
                raise RecordError(f"timestamp {text!r}: {exc}") from exc
            if len(self._seconds) > 100_000:
                self._seconds.clear()
            self._seconds[prefix] = seconds
        return seconds * 1000 + int(text[-4:-1])


def record_kind(record: Mapping[str, Any]) -> str:
    """'counter', 'gauge', 'native_histogram' or 'exemplar'."""
    for kind in (*SAMPLE_KINDS, HISTOGRAM, EXEMPLAR):
        if kind in record:
            return kind
    raise RecordError(f"record has none of counter/gauge/native_histogram/exemplar: {sorted(record)}")


def histogram_fields(encoded: Mapping[str, Any]) -> dict[str, Any]:
    """A native histogram record as keyword arguments of remote_v1_pb2.Histogram (exact, floats decoded)."""
    out: dict[str, Any] = {}
    for key in ("count", "zero_count"):  # an int on the wire stays an int, a float a float
        value = encoded[key]
        if isinstance(value, int) and not isinstance(value, bool):
            out[f"{key}_int"] = value
        else:
            out[f"{key}_float"] = decode_value(value)
    out["sum"] = decode_value(encoded["sum"])
    out["schema"] = int(encoded["schema"])
    out["zero_threshold"] = decode_value(encoded["zero_threshold"])
    for side in ("negative", "positive"):
        spans = encoded.get(f"{side}_spans")
        if spans:
            out[f"{side}_spans"] = [{"offset": int(o), "length": int(n)} for o, n in spans]
        if encoded.get(f"{side}_deltas"):
            out[f"{side}_deltas"] = [int(d) for d in encoded[f"{side}_deltas"]]
        if encoded.get(f"{side}_counts"):
            out[f"{side}_counts"] = [decode_value(c) for c in encoded[f"{side}_counts"]]
    if encoded.get("custom_values"):
        out["custom_values"] = [decode_value(c) for c in encoded["custom_values"]]
    out["reset_hint"] = RESET_HINTS.get(encoded.get("reset_hint", "unknown"), 0)
    return out


class Sample(NamedTuple):
    """One archived point, decoded: what the restore job needs, whichever format stored it.

    `payload` is the exact float (counter/gauge), remote_v1_pb2.Histogram keyword arguments
    (native_histogram), or (value, sorted label pairs) for an exemplar."""

    name: str
    labels: Sequence[tuple[str, str]]  # every label but __name__
    ms: int
    kind: str
    payload: Any
    start: int = 0  # 2.0 start timestamp, ms (0: none)


class MetadataRecord(NamedTuple):
    """A metric family's metadata as the pipeline saw it at `ms` (a 1.0 metadata entry or 2.0 per-series
    metadata; for 2.0 the family is the series' metric name, as the sinks name it for a 1.0 receiver)."""

    name: str
    ms: int
    type: str  # transforms.core.metadata.TYPE_NAMES: counter, gauge, summary, histogram, ...
    help: str
    unit: str

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "timestamp": format_ms(self.ms), "type": self.type,
                           "help": self.help, "unit": self.unit}, ensure_ascii=False, separators=(",", ":"))


def metadata_records(records: Iterable[Mapping[str, Any]]) -> list[MetadataRecord]:
    """NDJSON-shaped metadata records -> MetadataRecords (RecordError if not in the shape)."""
    stamps = Timestamps()
    out = []
    for record in records:
        try:
            fields = (record["name"], stamps.to_ms(record["timestamp"]), record["type"], record["help"], record["unit"])
        except (KeyError, TypeError) as exc:
            raise RecordError(f"metadata record not in the archive's shape: {exc!r}") from exc
        if not all(isinstance(f, str) for f in fields[:1] + fields[2:]):
            raise RecordError(f"metadata record with a non-string field: {record!r}"[:300])
        out.append(MetadataRecord(*fields))
    return out


@dataclasses.dataclass
class SampleColumns:
    """A file's points as columns (Parquet's restore input): float samples without a Python object per row.

    Rows come in runs of one series each; `names`/`labels` are per run, the arrays per row. Rows that are
    not float samples (histograms, exemplars) come as `others`, decoded Sample by Sample."""

    names: list[str]
    labels: list[Sequence[tuple[str, str]]]
    row_run: Any  # numpy int64 per row: its run
    stamps: Any  # numpy int64 per row, ms
    values: Any  # numpy float64 per row, exact (special values decoded, NaN bits kept); only float rows count
    kinds: Any  # numpy int8 per row: 1 counter, 2 gauge, 0 anything else
    others: list[Sample]
    starts: Any = None  # numpy int64 per row, ms (0: none); None when no row has one


def record_samples(records: Iterable[Mapping[str, Any]]) -> Iterator[Sample]:
    """NDJSON-shaped records -> samples."""
    stamps = Timestamps()
    for record in records:
        kind = record_kind(record)
        try:
            name, tags, stamp = record["name"], record["tags"], record["timestamp"]
            body = record[kind]
            if kind == HISTOGRAM:
                payload: Any = histogram_fields(body)
            elif kind == EXEMPLAR:
                payload = (decode_value(body["value"]), sorted(body["labels"].items()))
            else:
                payload = decode_value(body["value"])
            start = record.get("start_timestamp")
            yield Sample(name, list(tags.items()), stamps.to_ms(stamp), kind, payload,
                         stamps.to_ms(start) if start else 0)
        except (KeyError, TypeError, AttributeError) as exc:
            raise RecordError(f"record not in the archive's shape: {exc!r}") from exc


def ndjson_columns(data: bytes) -> SampleColumns:
    """A decompressed NDJSON file's points as columns (the restore's input). Float-sample lines go through
    the compiled parser (transforms.core.wire.line_columns); every line it declines goes through json.loads
    and record_samples as before, so the samples are the same either way. A declined float sample keeps its
    place among the parsed ones (one run of its own); histograms and exemplars become `others`."""
    parsed = line_columns.parse(data, _FIXED)
    names, labels = parsed.names, parsed.labels
    runs, stamps, values, kinds, starts = (parsed.runs.astype(np.int64), parsed.timestamps, parsed.values,
                                           parsed.kinds, parsed.starts)
    others: list[Sample] = []
    if len(parsed.declined):
        spans = parsed.declined.tolist()
        # split on "\n" only (as the json path does): JSON strings may hold U+2028 etc.
        records = [json.loads(data[start:end].decode()) for start, end, _ in spans]
        rows: list[int] = []
        floats: list[Sample] = []
        for (_, _, row), sample in zip(spans, record_samples(records), strict=True):
            if sample.kind in SAMPLE_KINDS:
                rows.append(row)
                floats.append(sample)
            else:
                others.append(sample)
        if floats:
            first = len(names)
            names.extend(s.name for s in floats)
            labels.extend(s.labels for s in floats)
            # np.insert puts each before the row it names, several before one row in their own order
            runs = np.insert(runs, rows, np.arange(first, first + len(floats), dtype=np.int64))
            stamps = np.insert(stamps, rows, np.array([s.ms for s in floats], np.int64))
            values = np.insert(values, rows, np.array([s.payload for s in floats], np.float64))
            kinds = np.insert(kinds, rows, np.array([SAMPLE_KINDS.index(s.kind) + 1 for s in floats], np.int8))
            if starts is None and any(s.start for s in floats):
                starts = np.zeros(len(parsed.timestamps), np.int64)
            if starts is not None:
                starts = np.insert(starts, rows, np.array([s.start for s in floats], np.int64))
    return SampleColumns(names, labels, runs, stamps, values, kinds, others, starts)
