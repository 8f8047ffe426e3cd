"""The core's own CPU on given messages, measured in this process, and the per-element overhead arithmetic.

    python -m bench.core_cost [--seconds 20] [--rate 60]   # the in-process figures alone, per shape

"The core" is what a pipeline must do for a message whatever runs it: for the archive, decode + archive lines +
the format's packing + a window's file bytes (`codec.decode`, `ArchiveFormat.convert`, `file_chunks`); for a
sink, decode + shard + order + request bodies, snappy included (`RequestBuilder.shard_messages`,
`SinkDriver.send_shard`), with a service that answers 204 at once, so no HTTP is counted. Everything else a
pipeline process spends on a message is overhead: the runner (Beam's bundles, coders, state, timers), Pub/Sub
pulls and acks, file writes, HTTP posts. `bench.streaming_cost` subtracts this core from the measured process CPU.

Warm, the core keeps its state (series tables, the sink's output series) across all messages, as a DoFn
instance does on Dataflow, whose SDK harness reuses instances across bundles. Cold (`fresh_every=N`), the
state is rebuilt every N messages: what Beam's local runner does, which unpickles a DoFn, calls `setup()` and
`teardown()` for every bundle (transform_evaluator._ParDoEvaluator), and its Pub/Sub read makes bundles of the
10 messages of one pull at most.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.archive_encode import best_of
from transforms.core.archive.format import archive_format
from transforms.core.metadata import MetadataStore
from transforms.core.protocol import DEFAULT_TENANT, MAX_DECOMPRESSED, Protocol
from transforms.core.retry import Attempt, Outcome
from transforms.core.sink.batching import ShardBatch
from transforms.core.sink.builder import RequestBuilder
from transforms.core.sink.config import from_flags
from transforms.core.wire import codec
from transforms.core.wire.validation import NameValidation
from transforms.io.sink_driver import SinkDriver, wall_clock

Message = tuple[bytes, dict[str, str]]  # (data, attributes), as published


@dataclass(frozen=True)
class Cost:
    """One process's CPU over a measured load, and the core's CPU on the same messages (warm, and cold: state
    rebuilt per bundle)."""

    cpu_seconds: float
    core_seconds: float
    messages: int  # Pub/Sub messages the process read in that time (its elements at the source)
    samples: int
    cold_core_seconds: float = math.nan

    @property
    def per_million(self) -> float:
        return self.cpu_seconds * 1e6 / self.samples if self.samples > 0 else math.nan

    @property
    def core_per_million(self) -> float:
        return self.core_seconds * 1e6 / self.samples if self.samples > 0 else math.nan

    @property
    def overhead_ms(self) -> float:
        """CPU per message beyond the core's own work, in milliseconds."""
        return (self.cpu_seconds - self.core_seconds) * 1e3 / self.messages if self.messages > 0 else math.nan

    @property
    def overhead_beyond_cold_ms(self) -> float:
        """CPU per message beyond the core run with its state rebuilt per bundle, in milliseconds."""
        return (self.cpu_seconds - self.cold_core_seconds) * 1e3 / self.messages if self.messages > 0 else math.nan

    @property
    def overhead_share(self) -> float:
        """The part of the process's CPU that is not the core's."""
        return (self.cpu_seconds - self.core_seconds) / self.cpu_seconds if self.cpu_seconds > 0 else math.nan


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), max(1, size))]


def archive_core(messages: Sequence[Message], per_window: int, format_name: str = "ndjson",
                 fresh_every: int | None = None) -> Callable[[], None]:
    """Decode + lines + packing per message, then each window's partitions into file bytes (not written).
    `fresh_every`: a new converter (series tables, kind prefixes) every that many messages; the metric types'
    store is kept, as the DoFn holds it through `Shared`."""
    fmt = archive_format(format_name)
    store = MetadataStore()
    converter = fmt.converter(store)

    def run() -> None:
        nonlocal converter
        seen = 0
        for window in chunks(messages, per_window):
            grouped: dict[Any, list] = defaultdict(list)
            for data, attributes in window:
                if fresh_every and seen % fresh_every == 0:
                    converter = fmt.converter(store)
                seen += 1
                tenant = attributes.get("tenant") or DEFAULT_TENANT
                decoded = codec.decode(data, Protocol(attributes["protocol"]), MAX_DECOMPRESSED, NameValidation.UTF8,
                                       table=converter.table(tenant))
                for partition, block in fmt.convert(converter, decoded.batch, tenant).items():
                    grouped[partition].append(block)
            for blocks in grouped.values():
                for _ in fmt.file_chunks(blocks)[0]:
                    pass
    return run


class Accepting:
    """A sink service that answers 204 at once: the builder makes every request body, nothing is sent.
    `keep` holds the bodies (for tests)."""

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self.bodies: list[bytes] = []

    def post(self, body: bytes, headers: dict[str, str], points: int = 0) -> Attempt:
        if self.keep:
            self.bodies.append(body)
        return Attempt(Outcome(status=204), "", 0.0)


def forward_core(messages: Sequence[Message], per_flush: int, url: str = "http://127.0.0.1:1/api/v1/write",
                 fresh_every: int | None = None, service: Accepting | None = None) -> Callable[[], None]:
    """The sink's default config (`--remote_write_url`): per flush, decode and shard the messages, then each
    shard's requests built and compressed in order, one shard after another (no thread pool). `fresh_every`:
    flushes of that many messages, each with a new builder (its series table and output series)."""
    sink = from_flags([url])[0]
    service = service or Accepting()
    driver = SinkDriver(RequestBuilder(sink, clock=wall_clock), service)

    def run() -> None:
        nonlocal driver
        for flush in chunks(messages, fresh_every or per_flush):
            if fresh_every:
                driver = SinkDriver(RequestBuilder(sink, clock=wall_clock), service)
            batches, dead = driver.builder.shard_messages(flush)
            if dead:
                raise ValueError(f"{len(dead)} dead letters building the sink's requests: the load is broken")
            for (tenant, _), batch in batches.items():
                driver.send_shard(tenant, batch)
    return run


class Shuffle:
    """What a shuffle does to an element on a runner that serialises it (Dataflow): Beam's default coder for
    these untyped elements (FastPrimitivesCoder: tuples, bytes and ints natively, our NamedTuple by pickle),
    encode then decode. None: elements pass as objects, as on the local runners."""

    def __init__(self) -> None:
        from apache_beam.coders import FastPrimitivesCoder

        self.coder = FastPrimitivesCoder()

    def __call__(self, element: Any) -> Any:
        return self.coder.decode(self.coder.encode(element))


def archive_graph(messages: Sequence[Message], per_window: int, shuffle: Shuffle | None = None,
                  format_name: str = "ndjson") -> Callable[[], None]:
    """The archive branch as the streaming graph runs it with warm DoFns: DecodeToRecords yields one
    (partition, PackedBlock) per partition, the group-by-partition carries them (through `shuffle`), then
    WriteArchiveFiles makes each window's file bytes."""
    fmt = archive_format(format_name)
    converter = fmt.converter(MetadataStore())
    move = shuffle or (lambda element: element)

    def run() -> None:
        for window in chunks(messages, per_window):
            grouped: dict[Any, list] = defaultdict(list)
            for data, attributes in window:
                tenant = attributes.get("tenant") or DEFAULT_TENANT
                decoded = codec.decode(data, Protocol(attributes["protocol"]), MAX_DECOMPRESSED, NameValidation.UTF8,
                                       table=converter.table(tenant))
                for partition, block in fmt.convert(converter, decoded.batch, tenant).items():
                    key, value = move((tuple(partition), block))
                    grouped[key].append(value)
            for blocks in grouped.values():
                for _ in fmt.file_chunks(blocks)[0]:
                    pass
    return run


def forward_graph(messages: Sequence[Message], per_flush: int, shuffle: Shuffle | None = None,
                  url: str = "http://127.0.0.1:1/api/v1/write", service: Accepting | None = None,
                  ) -> Callable[[], None]:
    """The sink branch as the streaming graph runs it with warm DoFns: ShardForSink shards each message alone
    and exports one chunk per shard it touches; GroupIntoBatches carries them (through `shuffle`); SendToSink
    builds a ShardBatch per key and flush from the chunks and sends it. Each DoFn has its own builder."""
    sink = from_flags([url])[0]
    service = service or Accepting()
    sharding = RequestBuilder(sink, clock=wall_clock)
    sending = SinkDriver(RequestBuilder(sink, clock=wall_clock), service)
    move = shuffle or (lambda element: element)

    def run() -> None:
        for flush in chunks(messages, per_flush):
            per_key: dict[Any, list] = defaultdict(list)
            for message in flush:
                batches, dead = sharding.shard_messages([message])
                if dead:
                    raise ValueError(f"{len(dead)} dead letters building the sink's requests: the load is broken")
                for key, batch in batches.items():
                    key, chunk = move((key, batch.export()))
                    per_key[key].append(chunk)
            for (tenant, _), shard_chunks in per_key.items():
                sending.builder.series.make_room()
                batch = ShardBatch()
                for chunk in shard_chunks:
                    batch.add_chunk(chunk, sending.builder.series)
                sending.send_shard(tenant, batch)
    return run


def main() -> None:
    from bench.cpu import REQUEST_SHAPES
    from bench.streaming_cost import RUNNER_BUNDLE, load_messages

    parser = argparse.ArgumentParser(prog="python -m bench.core_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=60.0, help="messages/s for 1000-sample messages (default 60)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of load (default 20)")
    parser.add_argument("--window_size", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, best kept (default 3)")
    args = parser.parse_args()
    hour = int(time.time()) // 3600 - 2
    print("CPU-s per 1 M samples (ms per message), this process, best of", args.repeats)
    for shape, series in REQUEST_SHAPES.items():
        rate = args.rate * 1000 / series
        messages = load_messages(shape, int(rate * args.seconds), hour)
        per_window, per_flush = int(rate * args.window_size), max(1, int(rate))
        runs = {
            "archive core, warm": archive_core(messages, per_window),
            f"archive core, cold per {RUNNER_BUNDLE}": archive_core(messages, per_window, fresh_every=RUNNER_BUNDLE),
            "archive graph, warm": archive_graph(messages, per_window),
            "archive graph, warm, shuffle coded": archive_graph(messages, per_window, Shuffle()),
            "sink core, warm": forward_core(messages, per_flush),
            f"sink core, cold per {RUNNER_BUNDLE}": forward_core(messages, per_flush, fresh_every=RUNNER_BUNDLE),
            "sink graph, warm": forward_graph(messages, per_flush),
            "sink graph, warm, shuffle coded": forward_graph(messages, per_flush, Shuffle()),
        }
        print(f"\n== {shape}: {len(messages)} messages of {series} samples")
        for name, run in runs.items():
            took = best_of(1 if "cold" in name else args.repeats, run)
            print(f"  {name:<36}{took * 1e6 / (len(messages) * series):>7.2f} ({took * 1e3 / len(messages):.2f} ms)",
                  flush=True)


if __name__ == "__main__":
    main()
