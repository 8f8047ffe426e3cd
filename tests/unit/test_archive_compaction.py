"""Compaction's pure part: the reader rule at every step of the protocol, the plan after any crash, the marker
file, and the compacted table (sorted by series then time, nothing lost, values bit-exact, read-friendly files)."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import random
from datetime import timedelta

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.archive_samples import records_of, sample_request
from transforms.core.archive import compaction
from transforms.core.archive import parquet as archive_parquet
from transforms.core.archive.compaction import CompactionError, Marker, live_files, plan_partition
from transforms.core.archive.format import archive_format
from transforms.core.archive.lines import LineBlock
from transforms.core.archive.records import RecordError

INPUTS = ["part-a-0000.ndjson.gz", "part-b-0000.parquet", "part-c-0000.parquet"]


def protocol_states(inputs: list[str], outputs: int) -> list[tuple[str, list[str], dict[str, Marker]]]:
    """Every state a partition passes through while compacting `inputs` (files present, markers present),
    including each file of step 2 and each deletion of step 3 one by one."""
    marker = Marker.new(inputs, outputs)
    states = [("before", list(inputs), {})]
    states.append(("marker written", list(inputs), {marker.name: marker}))
    for n in range(1, outputs + 1):
        states.append((f"{n} output(s)", [*inputs, *marker.outputs[:n]], {marker.name: marker}))
    for n in range(1, len(inputs) + 1):
        states.append((f"{n} input(s) deleted", [*inputs[n:], *marker.outputs], {marker.name: marker}))
    states.append(("marker deleted", list(marker.outputs), {}))
    return states


def test_readers_see_the_old_set_or_the_new_one_at_every_step() -> None:
    marker = Marker.new(INPUTS, 2)
    seen = {name: sorted(live_files(files, markers)) for name, files, markers in protocol_states(INPUTS, 2)}
    new = sorted(marker.outputs)
    assert seen["before"] == seen["marker written"] == seen["1 output(s)"] == sorted(INPUTS)
    for state in ("2 output(s)", "1 input(s) deleted", "3 input(s) deleted", "marker deleted"):
        assert seen[state] == new, state


def test_the_rule_takes_paths_keeps_their_order_and_ignores_other_partitions_markers() -> None:
    marker = Marker.new(INPUTS, 1)
    paths = [f"gs://b/a/tenant=t/date=2026-11-25/hour=08/{n}" for n in [*INPUTS, *marker.outputs]]
    assert live_files(paths, {"gs://b/a/x/" + marker.name: marker}) == paths[-1:]
    other = Marker.new(["part-z.parquet"], 1)
    assert live_files(INPUTS, {other.name: other}) == INPUTS


def test_a_recompaction_of_compacted_files_plus_late_ones_hides_exactly_its_inputs() -> None:
    first = Marker.new(INPUTS, 1)
    late = "part-d-0000.parquet"
    second = Marker.new([*first.outputs, late], 1)
    files = [*first.outputs, late, *second.outputs]
    assert live_files(files, {second.name: second}) == list(second.outputs)
    assert live_files(files[:-1], {second.name: second}) == [*first.outputs, late]


@pytest.mark.parametrize("crash", range(8))
def test_the_plan_after_a_crash_at_any_step_ends_with_exactly_the_data_once(crash: int) -> None:
    """Simulate the executor on sets of names: a file's data is its inputs' (outputs carry their inputs')."""
    states = protocol_states(INPUTS, 2)
    _, files, markers = states[min(crash, len(states) - 1)]
    files = set(files)
    plan = plan_partition(sorted(files), markers)
    for marker in plan.finish:
        files -= set(marker.inputs)
    for marker in plan.undo:
        files -= set(marker.outputs)
    if plan.inputs:
        redo = Marker.new(plan.inputs, 2)
        files = (files - set(redo.inputs)) | set(redo.outputs)
    assert all(compaction.is_compacted(f) for f in files) and len(files) == 2
    assert files == set(Marker.new(INPUTS, 2).outputs), "a rerun names the same files: the id is the inputs'"
    again = plan_partition(sorted(files), {})
    assert again == compaction.Plan((), (), ()), "a second run changes nothing"


def test_the_plan_compacts_late_files_with_the_compacted_ones_and_skips_empty_partitions() -> None:
    done = Marker.new(INPUTS, 1)
    plan = plan_partition([*done.outputs, "part-late-0000.parquet"], {})
    assert plan.inputs == (*done.outputs, "part-late-0000.parquet")
    assert plan_partition([], {}) == compaction.Plan((), (), ())


def test_the_id_is_the_input_set_not_its_order_or_folder() -> None:
    assert compaction.compaction_id(INPUTS) == compaction.compaction_id(["/x/" + n for n in reversed(INPUTS)])
    assert compaction.compaction_id(INPUTS) != compaction.compaction_id(INPUTS[:2])
    marker = Marker.new(reversed(INPUTS), 3)
    assert marker.outputs == tuple(f"compacted-{marker.id}-{n:04d}.parquet" for n in range(3))
    assert marker.name == f"_compaction-{marker.id}.json"


def test_markers_round_trip_and_foreign_ones_are_a_clear_error() -> None:
    marker = Marker.new(INPUTS, 2)
    assert Marker.from_json(marker.to_json(), "p/" + marker.name) == marker
    bad = [b"{", b"[]", json.dumps({"id": marker.id, "inputs": [], "outputs": ["x"]}).encode(),
           json.dumps({"id": "zz", "inputs": ["a"], "outputs": ["b"]}).encode(),
           json.dumps({"id": marker.id, "inputs": ["../a"], "outputs": ["b"]}).encode()]
    for stored in bad:
        with pytest.raises(CompactionError, match="not a compaction marker"):
            Marker.from_json(stored, "p/" + marker.name)
    with pytest.raises(CompactionError, match="not the one its file name says"):
        Marker.from_json(marker.to_json(), "p/_compaction-0123456789abcdef.json")
    with pytest.raises(CompactionError):
        Marker.new([], 1)


def test_an_hour_is_closed_once_it_has_ended_before_the_cutoff() -> None:
    nine = 1_795_597_200_000  # 2026-11-25T09:00:00Z
    assert compaction.partition_closed("2026-11-25", "08", nine)
    assert not compaction.partition_closed("2026-11-25", "08", nine - 1)
    assert not compaction.partition_closed("someday", "08", nine)


def records(count: int, seed: int) -> list[str]:
    """Float samples of series whose labels make the order tricky: prefixes, escapes, separators in values."""
    rng = random.Random(seed)
    label_sets = [{"job": "a"}, {"job": "a", "x": "1"}, {"job": "ab"}, {"jo": "z"}, {"job": "a\x00x=1"},
                  {"job": "a\\"}, {"job": "a\x01"}, {}, {"job": "é"}]
    values = [1.5, "StaleNaN", "NaN", "NaN:0x7ff8000000000abc", "+Inf", -0.0, 3]
    out = []
    for _ in range(count):
        name = rng.choice(["up", "up_total", "u", "node_cpu"])
        ms = rng.randrange(0, 3_600_000)
        stamp = f"2026-11-25T08:{ms // 60_000:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}Z"
        out.append(json.dumps({"name": name, "tags": rng.choice(label_sets), "timestamp": stamp, "kind": "absolute",
                               rng.choice(["gauge", "counter"]): {"value": rng.choice(values)}}))
    return out


def python_order(table) -> list[tuple]:
    rows = table.select(["name", "labels", "timestamp"]).to_pylist()
    return [(r["name"], tuple(sorted(r["labels"])), r["timestamp"]) for r in rows]


def canonical(table) -> list[str]:  # the NDJSON shape carries NaN bits as text: compare through it
    return sorted(json.dumps(r, sort_keys=True) for r in archive_parquet.table_records(table))


def test_the_compacted_table_is_sorted_by_series_then_time_and_loses_nothing() -> None:
    tables = [archive_parquet.encode_table(records(700, seed)) for seed in range(4)]
    table = compaction.compact_table(tables)
    order = python_order(table)
    assert order == sorted(order), "sorted by name, then label pairs, then time"
    assert len(table) == 2800
    assert canonical(table) == sorted(itertools.chain.from_iterable(canonical(t) for t in tables))


def test_a_large_partition_is_sorted_by_name_then_time_slice_then_series_then_time() -> None:
    """Past slice_rows, each metric's rows come in 10-minute slices of the hour (so row groups hold one metric's
    slice), each slice sorted by series then time; nothing lost."""
    tables = [archive_parquet.encode_table(records(700, seed)) for seed in range(4)]
    table = compaction.compact_table(tables, slice_rows=1000)
    rows = python_order(table)
    hour = min(r[2] for r in rows).replace(minute=0, second=0, microsecond=0)
    keyed = [(name, (stamp - hour) // timedelta(milliseconds=compaction.SLICE_MS), labels, stamp)
             for name, labels, stamp in rows]
    assert keyed == sorted(keyed), "sorted by name, then slice, then label pairs, then time"
    assert len({k[1] for k in keyed}) == 6 and keyed != sorted(keyed, key=lambda k: (k[0], k[2], k[3]))
    assert canonical(table) == sorted(itertools.chain.from_iterable(canonical(t) for t in tables))
    assert python_order(compaction.compact_table(tables, slice_rows=2801)) == sorted(rows), "below it: by series"


def test_rows_spanning_days_sort_alike_through_the_general_sort() -> None:
    late = [r.replace("2026-11-25T08:", "2026-11-29T08:") for r in records(300, 3)]  # 4 days: past the packed key
    tables = [archive_parquet.encode_table(records(300, 2)), archive_parquet.encode_table(late)]
    table = compaction.compact_table(tables)
    order = python_order(table)
    assert order == sorted(order) and len(table) == 600


def test_samples_histograms_and_exemplars_of_both_formats_compact_bit_exact() -> None:
    lines = records_of(sample_request())
    blocks = [LineBlock.of_records(lines[:4]), LineBlock.of_records(lines[4:])]
    ndjson, pq_format = archive_format("ndjson"), archive_format("parquet")
    stored_ndjson = b"".join(ndjson.file_chunks([ndjson.pack(b) for b in blocks])[0])  # two gzip members
    stored_parquet = b"".join(pq_format.file_chunks([pq_format.pack(b) for b in blocks])[0])
    tables = [compaction.file_table("part-a.ndjson.gz", stored_ndjson),
              compaction.file_table("part-b.parquet", stored_parquet)]
    [data] = compaction.compacted_files(compaction.compact_table(tables))
    back = pq_format.read(data)
    expected = ndjson.read(stored_ndjson) + pq_format.read(stored_parquet)
    assert sorted(json.dumps(r, sort_keys=True) for r in back) == sorted(json.dumps(r, sort_keys=True)
                                                                          for r in expected)
    assert len(back) == 2 * len(lines)


def test_unreadable_inputs_are_a_record_error_naming_the_file() -> None:
    for name, stored in (("part-x.ndjson.gz", b"not gzip"), ("part-x.parquet", b"PAR1 nope"),
                         ("part-x.ndjson.gz", gzip.compress(b'{"name": "up"}\n')), ("part-x.csv", b"")):
        with pytest.raises(RecordError):
            compaction.file_table(name, stored)


def test_compacted_files_have_row_groups_statistics_a_bloom_filter_and_split_by_rows(tmp_path) -> None:
    table = compaction.compact_table([archive_parquet.encode_table(records(3000, 7))])
    files = compaction.compacted_files(table, rows_per_file=1200, row_group_rows=500)
    assert len(files) == compaction.file_count(3000, 1200) == 3
    metas = [pq.ParquetFile(io.BytesIO(f)).metadata for f in files]
    assert [m.num_rows for m in metas] == [1200, 1200, 600]
    assert [m.num_row_groups for m in metas] == [3, 3, 2]
    group = metas[0].row_group(0)
    names = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    assert names["name"].statistics.has_min_max and names["timestamp"].statistics.has_min_max
    assert group.sorting_columns[0].column_index == 0
    path = tmp_path / "c.parquet"
    path.write_bytes(files[0])
    probe = "select row_group_id, bloom_filter_excludes from parquet_bloom_probe(?, 'name', ?) order by 1"
    reader = pq.ParquetFile(io.BytesIO(files[0]))
    for name in ("up", "node_cpu"):  # a group's filter excludes the name exactly when the group lacks it
        held = [name in reader.read_row_group(g, ["name"]).column("name").to_pylist() for g in range(3)]
        assert duckdb.execute(probe, [str(path), name]).fetchall() == [(g, not h) for g, h in enumerate(held)]
    assert duckdb.execute(probe, [str(path), "no_such_metric"]).fetchall() == [(g, True) for g in range(3)]
    assert pq.read_table(io.BytesIO(files[0])).schema.equals(archive_parquet.SCHEMA)
