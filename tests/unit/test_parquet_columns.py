"""Parquet from a batch's columns (transforms.core.archive.parquet_columns) against the record-built table
(tests/reference/parquet_records.py: json.loads of the NDJSON lines of the same batch).

Equal means: a file from the columns reads back with the archive's schema, and read and written again
by the same writer it is byte for byte the reference's file (same rows in the same order, the same value
bits, NaN payloads included, kinds, start timestamps, histograms and exemplars, row groups, statistics).
The files themselves differ only in their dictionary pages' order: file_table hands the writer names and
labels already dictionary-encoded.
"""

from __future__ import annotations

import io
import math
import struct
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.archive_samples import ODD_NAN, T0, sample_request
from tests.reference.parquet_records import encode_table as reference_table
from tests.unit.test_wire_decode import v1_requests, v2_requests
from transforms.core.archive import parquet
from transforms.core.archive.format import archive_format
from transforms.core.archive.lines import LineBlock
from transforms.core.archive.metric_to_log import ConversionError
from transforms.core.archive.parquet_columns import ParquetBlocks, SeriesArrays
from transforms.core.archive.records import RecordError
from transforms.core.metadata import MetadataStore
from transforms.core.protocol import STALE_NAN, Protocol, float_bits
from transforms.core.wire import codec, snappy_block
from transforms.core.wire.builders import Series, build_v1, build_v2

FORMAT = archive_format("parquet")
PROMETHEUS_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]
NEGATIVE_NAN = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000000))[0]


def canonical(stored: bytes) -> bytes:
    """A file as the reference writer writes its contents (see the module docstring)."""
    table = pq.read_table(io.BytesIO(stored))
    assert table.schema.equals(parquet.SCHEMA)
    return parquet.table_bytes(table)


def archive_both_ways(requests, protocol: Protocol, compress_blocks: bool = True) -> tuple[dict, dict]:
    """Each partition's file, from the columns (format.convert, as the pipeline does) and from the
    lines' records (the reference), over several requests (a file holds many requests' blocks)."""
    converter = FORMAT.converter(MetadataStore(), compress_blocks=compress_blocks)
    blocks, lines = defaultdict(list), defaultdict(list)
    for request in requests:
        body = snappy_block.compress(request.SerializeToString())
        batch = codec.decode(body, protocol, 1 << 24, table=converter.table("t")).batch
        for partition, line_block in converter.convert(batch, "t").items():
            lines[partition] += line_block.records()
        for partition, packed in FORMAT.convert(converter, batch, "t").items():
            blocks[partition].append(packed)
    assert blocks.keys() == lines.keys()
    from_columns = {p: canonical(b"".join(FORMAT.file_chunks(packed)[0])) for p, packed in blocks.items()}
    from_records = {p: parquet.table_bytes(reference_table(records)) for p, records in lines.items()}
    for partition, packed in blocks.items():
        assert sum(block.lines for block in packed) == len(lines[partition])
    return from_columns, from_records


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([Protocol.V1, Protocol.V2]), st.data())
def test_parquet_from_columns_is_byte_identical_to_the_record_built_file(protocol, data) -> None:
    strategy = v1_requests() if protocol is Protocol.V1 else v2_requests()
    requests = data.draw(st.lists(strategy, min_size=1, max_size=3))
    valid = []
    for request in requests:
        try:
            codec.decode(snappy_block.compress(request.SerializeToString()), protocol, 1 << 24)
        except Exception:  # refused requests never reach the archive
            continue
        valid.append(request)
    try:
        from_records: dict | str = archive_both_ways(valid, protocol)[1]
    except ConversionError as exc:
        from_records = str(exc)
    if isinstance(from_records, str):
        with pytest.raises(ConversionError) as raised:
            archive_both_ways(valid, protocol)
        assert str(raised.value) == from_records  # the same sample refused, with the lines' message
        return
    from_columns, from_records = archive_both_ways(valid, protocol)
    assert from_columns == from_records


def realistic_series(count: int, samples: int, start: int = 0) -> list[Series]:
    """`count` series of node_exporter-like labels (UTF-8 in some), `samples` each, special values mixed in."""
    specials = [STALE_NAN, math.inf, -math.inf, PROMETHEUS_NAN, ODD_NAN, NEGATIVE_NAN, -0.0, 5e-324]
    out = []
    for i in range(count):
        labels = {"__name__": ("node_cpu_seconds_total", "node_memory_bytes", "temperature_°C")[i % 3],
                  "instance": f"host-{i % 17}:9100", "job": "node", "cpu": str(i),
                  "zone": "zürich" if i % 5 else "東京"}
        points = [(T0 - 1000 + (i * 14_401 + s * 15_000) % 7_200_000,
                   specials[(i + s) % len(specials)] if (i + s) % 9 == 0 else i * 1.5 + s) for s in range(samples)]
        out.append(Series(labels, points, metric_type=("counter", "gauge", "unknown")[i % 3]))
    return out


@pytest.mark.parametrize("protocol", [Protocol.V1, Protocol.V2])
def test_realistic_requests_across_hours_match_the_reference(protocol) -> None:
    """2000-sample requests over three hours, series repeating across requests and reordered, plus a
    request with histograms and exemplars whose rows take the record path into the same files."""
    build = build_v1 if protocol is Protocol.V1 else build_v2
    series = realistic_series(500, 4)
    requests = [build(series), build(series[::-1]), build(realistic_series(700, 3)[200:])]
    if protocol is Protocol.V1:
        requests.append(sample_request())
    from_columns, from_records = archive_both_ways(requests, protocol)
    assert len(from_columns) >= 3
    assert from_columns == from_records
    table = pq.read_table(io.BytesIO(from_columns[max(from_columns)]))
    assert table.num_rows > 1000


def test_uncompressed_blocks_make_the_same_files_and_a_cut_one_is_refused() -> None:
    """The local runner's blocks skip the shuffle's LZ4: the files are the same; a block cut short is not read."""
    requests = [build_v1(realistic_series(500, 4)), build_v1(realistic_series(300, 2)[::-1]), sample_request()]
    raw_files, reference = archive_both_ways(requests, Protocol.V1, compress_blocks=False)
    assert raw_files == reference == archive_both_ways(requests, Protocol.V1)[0]
    batch = codec.decode(snappy_block.compress(requests[0].SerializeToString()), Protocol.V1, 1 << 24).batch
    raw = FORMAT.convert(FORMAT.converter(MetadataStore(), compress_blocks=False), batch, "t")
    packed = FORMAT.convert(FORMAT.converter(MetadataStore()), batch, "t")
    partition = max(raw, key=lambda p: raw[p].lines)
    assert len(raw[partition].data) > 2 * len(packed[partition].data)  # what the compression saves a shuffle
    with pytest.raises(RecordError, match="not a Parquet archive block"):
        parquet.file_table([raw[partition].data[:-10]])


def test_start_timestamps_come_from_the_sample_or_else_the_series_created_time() -> None:
    request = build_v2([Series({"__name__": "a_total", "job": "j"}, [(T0, 1.0), (T0 + 1, 2.0)], metric_type="counter")])
    request.timeseries[0].samples[0].start_timestamp = T0 - 5000
    request.timeseries[0].created_timestamp = T0 - 9000
    from_columns, from_records = archive_both_ways([request], Protocol.V2)
    assert from_columns == from_records
    rows = pq.read_table(io.BytesIO(next(iter(from_columns.values())))).to_pylist()
    assert [int(r["start_timestamp"].timestamp() * 1000) for r in rows] == [T0 - 5000, T0 - 9000]
    assert {r["type"] for r in rows} == {"counter"}


def test_special_values_keep_their_bits() -> None:
    values = [STALE_NAN, PROMETHEUS_NAN, ODD_NAN, NEGATIVE_NAN, math.inf, -math.inf, 0.5]
    request = build_v1([Series({"__name__": "g", "i": str(i)}, [(T0, v)]) for i, v in enumerate(values)])
    from_columns, _ = archive_both_ways([request], Protocol.V1)
    stored = next(iter(from_columns.values()))
    rows = pq.read_table(io.BytesIO(stored)).to_pylist()
    assert [(r["value"], r["special"]) for r in rows] == [
        (None, "StaleNaN"), (None, "NaN"), (None, "NaN:0x7ff8000000000abc"), (None, "NaN:0xfff8000000000000"),
        (math.inf, None), (-math.inf, None), (0.5, None)]
    read_back = [s.payload for s in FORMAT.samples(stored)]
    assert [float_bits(v) for v in read_back] == [float_bits(v) for v in values]


def test_a_timestamp_outside_datetimes_range_is_refused_like_the_lines() -> None:
    request = build_v1([Series({"__name__": "g"}, [(T0, 1.0), (253_402_300_800_000, 2.0)])])
    converter = ParquetBlocks(MetadataStore())
    batch = codec.decode(snappy_block.compress(request.SerializeToString()), Protocol.V1, 1 << 24,
                         table=converter.table("t")).batch
    with pytest.raises(ConversionError) as lines_error:
        converter.convert(batch, "t")
    with pytest.raises(ConversionError) as columns_error:
        converter.blocks(batch, "t")
    assert str(columns_error.value) == str(lines_error.value) == \
        "timestamp 253402300800000 ms is outside the representable range"


def test_series_arrays_take_across_merged_runs() -> None:
    """Slots arrive in runs of many sizes; takes give each slot's own name and sorted labels, and the runs
    stay few (merged like a binary counter)."""
    names: list[str] = []
    labels: list[tuple[tuple[str, str], ...]] = []
    arrays = SeriesArrays(names)
    rng = np.random.default_rng(7)
    for run in range(60):
        for _ in range(int(rng.integers(1, 40))):
            slot = len(names)
            names.append(f"m{slot % 13}")
            labels.append((("z", str(run)), ("__name__", names[-1]), ("a", str(slot))))
        arrays.extend(labels)
        assert len(arrays.runs) <= int(math.log2(len(names))) + 1
        slots = np.unique(rng.integers(0, len(names), 50))
        taken = arrays.take(slots).column(0)
        assert taken.to_pylist() == [parquet.series_key(names[s], [("a", labels[s][2][1]), ("z", labels[s][0][1])])
                                     for s in slots]
        decoded_names, decoded_labels = parquet.series_columns(taken)
        assert decoded_names.to_pylist() == [names[s] for s in slots]
        assert [dict(p) for p in decoded_labels.to_pylist()] == [{"a": labels[s][2][1], "z": labels[s][0][1]}
                                                                 for s in slots]


def test_records_blocks_and_column_blocks_mix_in_one_file() -> None:
    """ArchiveFormat.pack of a LineBlock (records) and blocks from columns make one sorted file."""
    request = build_v1(realistic_series(50, 2))
    converter = FORMAT.converter(MetadataStore())
    batch = codec.decode(snappy_block.compress(request.SerializeToString()), Protocol.V1, 1 << 24,
                         table=converter.table("t")).batch
    lines = converter.convert(batch, "t")
    columns = FORMAT.convert(converter, batch, "t")
    for partition, block in lines.items():
        records = LineBlock(*block).records()
        half = len(records) // 2
        packed = [FORMAT.pack(LineBlock.of_records(records[:half])), columns[partition],
                  FORMAT.pack(LineBlock.of_records(records[half:]))]
        assert canonical(b"".join(FORMAT.file_chunks(packed)[0])) == \
            parquet.table_bytes(reference_table(records[:half] + records + records[half:]))


tricky_text = st.text(alphabet=st.sampled_from(["\x00", "\x01", "\xff", "\x7f", "a", "é", "名", "\U0001f600"]),
                      max_size=4)
series_keys = st.tuples(tricky_text, st.lists(st.tuples(tricky_text, tricky_text), max_size=3).map(sorted))


@settings(max_examples=300, deadline=None)
@given(st.lists(series_keys, min_size=2, max_size=8))
def test_series_keys_sort_as_python_sorts_the_series_and_decode_back(series) -> None:
    """Keys compared as bytes order series as (name, sorted labels) tuples do, NULs and U+00FF included,
    and decode (in Arrow) to the same names and labels."""
    keys = [parquet.series_key(name, pairs) for name, pairs in series]
    assert sorted(range(len(series)), key=keys.__getitem__) == sorted(range(len(series)), key=series.__getitem__)
    names, labels = parquet.series_columns(pa.array(keys, pa.binary()))
    assert names.to_pylist() == [name for name, _ in series]
    assert labels.to_pylist() == [list(pairs) for _, pairs in series]


def test_tenants_keep_their_own_series_and_kinds() -> None:
    """Two tenants' requests interleaved through one converter: each file has its tenant's kinds (the same
    family is a counter for one, untyped for the other) and matches the reference."""
    converter = FORMAT.converter(MetadataStore())
    typed = [Series({"__name__": "jobs_total"}, metric_type="counter")]
    counted = {"a": build_v1([Series({"__name__": "jobs_total", "i": str(i)}, [(T0, i)]) for i in range(3)], typed),
               "b": build_v1([Series({"__name__": "jobs_total", "i": str(i)}, [(T0, i)]) for i in range(5)])}
    files = {}
    for tenant in ("a", "b", "a", "b"):
        body = snappy_block.compress(counted[tenant].SerializeToString())
        batch = codec.decode(body, Protocol.V1, 1 << 24, table=converter.table(tenant)).batch
        lines = converter.convert(batch, tenant)
        for partition, packed in FORMAT.convert(converter, batch, tenant).items():
            stored = b"".join(FORMAT.file_chunks([packed])[0])
            assert canonical(stored) == parquet.table_bytes(reference_table(lines[partition].records()))
            files[partition.tenant] = pq.read_table(io.BytesIO(stored))
    assert set(files["a"].column("type").to_pylist()) == {"counter"} and files["a"].num_rows == 3
    assert set(files["b"].column("type").to_pylist()) == {"gauge"} and files["b"].num_rows == 5


ROW_SERIES = st.tuples(st.sampled_from(["a", "b", "a\x00", ""]),
                       st.lists(st.tuples(st.sampled_from(["x", "y", "x\x01"]), st.sampled_from(["1", "", "1\\"])),
                                max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(ROW_SERIES, st.integers(1, 3)), max_size=12), st.booleans(), st.booleans())
def test_series_runs_start_where_the_name_or_any_label_changes(runs, sliced: bool, stored: bool) -> None:
    """The restore's run finder (pyarrow kernels and numpy: label counts, then labels compared as dictionary
    codes with the same position in the row before) against a row-by-row comparison; on the table as built,
    and as read back from Parquet with its strings as dictionaries (read_series_table, several row groups);
    the first series' labels as to_pylist gives them."""
    rows = [series for series, repeat in runs for _ in range(repeat)]
    table = pa.table({"name": pa.array([name for name, _ in rows], pa.string()),
                      "labels": pa.array([labels for _, labels in rows], parquet.LABELS)})
    if stored:
        sink = io.BytesIO()
        pq.write_table(table, sink, row_group_size=5)
        table = pq.read_table(io.BytesIO(sink.getvalue()), read_dictionary=list(parquet.SERIES_DICTIONARIES))
        table = table.unify_dictionaries()
        assert not rows or pa.types.is_dictionary(table.column("name").type)
    if sliced and len(table) > 1:
        table, rows = table.slice(1), rows[1:]  # label offsets that do not start at 0
    expected = [i for i in range(len(rows)) if i == 0 or rows[i] != rows[i - 1]]
    assert parquet._series_runs(table) == expected
    assert parquet._labels_of(table.column("labels"), expected) == [list(rows[i][1]) for i in expected]
