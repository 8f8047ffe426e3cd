"""The pure parts of `bench.streaming_cost`: the overhead arithmetic, the in-process core, counting archived lines."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import pytest

from bench import core_cost
from bench.streaming_cost import count_lines, feeder_message, load_messages
from transforms.core.archive.metric_to_log import is_metadata_only
from transforms.core.protocol import MAX_DECOMPRESSED, Protocol
from transforms.core.wire import codec


def test_cost_per_million_and_overhead_per_message() -> None:
    # 3.0 CPU-s for 500 messages of 1000 samples, the core 1.0 warm and 2.5 cold
    cost = core_cost.Cost(cpu_seconds=3.0, core_seconds=1.0, messages=500, samples=500_000, cold_core_seconds=2.5)
    assert cost.per_million == pytest.approx(6.0)
    assert cost.core_per_million == pytest.approx(2.0)
    assert cost.overhead_ms == pytest.approx(4.0)  # (3.0 - 1.0) s / 500 messages
    assert cost.overhead_beyond_cold_ms == pytest.approx(1.0)
    assert cost.overhead_share == pytest.approx(2 / 3)


def test_cost_without_messages_or_cpu_is_nan_never_a_division_by_zero() -> None:
    empty = core_cost.Cost(cpu_seconds=0.0, core_seconds=0.0, messages=0, samples=0)
    assert all(math.isnan(v) for v in (empty.per_million, empty.core_per_million, empty.overhead_ms,
                                        empty.overhead_beyond_cold_ms, empty.overhead_share))
    assert math.isnan(core_cost.Cost(1.0, 0.5, 10, 10_000).overhead_beyond_cold_ms)  # no cold core measured


def test_load_messages_carry_their_samples_in_the_given_hour() -> None:
    hour = 490_000
    messages = load_messages("prom-2000", 6, hour)
    assert len(messages) == 6
    for data, attributes in messages:
        decoded = codec.decode(data, Protocol(attributes["protocol"]), MAX_DECOMPRESSED)
        assert decoded.counts.samples == int(attributes["samples"]) == 2000
        times = {s.timestamp // 3_600_000 for series in decoded.message.timeseries for s in series.samples}
        assert times == {hour}
    assert is_metadata_only(feeder_message()[1])


@pytest.mark.parametrize("fresh_every", [None, 3])
def test_forward_core_builds_a_request_for_every_sample(fresh_every: int | None) -> None:
    messages = load_messages("1000x10", 8, 490_000)
    service = core_cost.Accepting(keep=True)
    core_cost.forward_core(messages, per_flush=4, fresh_every=fresh_every, service=service)()
    sent = sum(codec.count(codec.decode(body, Protocol.V1, MAX_DECOMPRESSED).message).samples
               for body in service.bodies)
    assert sent == 8 * 1000


def test_count_lines_reads_multi_member_gzip_files_once(tmp_path: Path) -> None:
    (tmp_path / "a.ndjson.gz").write_bytes(gzip.compress(b"1\n2\n") + gzip.compress(b"3\n"))
    (tmp_path / "skip.tmp").write_bytes(b"x\n")
    seen: dict[Path, int] = {}
    assert count_lines(tmp_path, ".ndjson.gz", seen) == 3
    (tmp_path / "b.ndjson.gz").write_bytes(gzip.compress(b"4\n"))
    assert count_lines(tmp_path, ".ndjson.gz", seen) == 4
    assert count_lines(tmp_path / "absent", ".ndjson.gz", {}) == 0


@pytest.mark.parametrize("coded", [False, True])
def test_forward_graph_sends_every_sample_through_chunks_and_the_shuffle(coded: bool) -> None:
    messages = load_messages("1000x10", 6, 490_000)
    service = core_cost.Accepting(keep=True)
    core_cost.forward_graph(messages, per_flush=4, shuffle=core_cost.Shuffle() if coded else None, service=service)()
    sent = sum(codec.count(codec.decode(body, Protocol.V1, MAX_DECOMPRESSED).message).samples
               for body in service.bodies)
    assert sent == 6 * 1000
