"""The core's own CPU on given messages, measured in this process, and the per-element overhead arithmetic.

"The core" is what a pipeline must do for a message whatever runs it: for the archive, decode + archive lines +
the format's packing + a window's file bytes (`codec.decode`, `ArchiveFormat.convert`, `file_chunks`); for a
sink, decode + shard + order + request bodies, snappy included (`Forwarder.shard_messages`, `send_shard`), with
a service that answers 204 at once, so no HTTP is counted. Everything else a pipeline process spends on a
message is overhead: the runner (Beam's bundles, coders, state, timers), Pub/Sub pulls and acks, file writes,
HTTP posts. `bench.streaming_cost` subtracts this core from the measured process CPU.

Warm, the core keeps its state (series tables, the sink's output series) across all messages, as a DoFn
instance does on Dataflow, whose SDK harness reuses instances across bundles. Cold (`fresh_every=N`), the
state is rebuilt every N messages: what Beam's local runner does, which unpickles a DoFn, calls `setup()` and
`teardown()` for every bundle (transform_evaluator._ParDoEvaluator), and its Pub/Sub read makes bundles of the
10 messages of one pull at most.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from transforms.core.archive.format import archive_format
from transforms.core.metadata import MetadataStore
from transforms.core.protocol import DEFAULT_TENANT, MAX_DECOMPRESSED, Protocol
from transforms.core.retry import Attempt, Outcome
from transforms.core.sink.config import from_flags
from transforms.core.sink.forwarder import Forwarder
from transforms.core.wire import codec
from transforms.core.wire.validation import NameValidation

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


def best_of(repeats: int, run: Callable[[], Any]) -> float:
    """The least CPU time (this process, all threads) of `repeats` runs: the machine is shared, and the best run
    is the one least disturbed. State kept between runs (series tables) is warm after the first, as in a
    pipeline that has run for a while."""
    times = []
    for _ in range(repeats):
        started = time.process_time()
        run()
        times.append(time.process_time() - started)
    return min(times)


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
    """A sink service that answers 204 at once: the forwarder builds every request body, nothing is sent."""

    def __init__(self) -> None:
        self.bodies = 0

    def post(self, body: bytes, headers: dict[str, str]) -> Attempt:
        self.bodies += 1
        return Attempt(Outcome(status=204), "", 0.0)


def forward_core(messages: Sequence[Message], per_flush: int, url: str = "http://127.0.0.1:1/api/v1/write",
                 fresh_every: int | None = None) -> Callable[[], None]:
    """The sink's default config (`--remote_write_url`): per flush, decode and shard the messages, then each
    shard's requests built and compressed in order, one shard after another (no thread pool). `fresh_every`:
    flushes of that many messages, each with a new Forwarder (its series table and output series)."""
    sink = from_flags([url])[0]
    forwarder = Forwarder(sink, service=Accepting())

    def run() -> None:
        nonlocal forwarder
        for flush in chunks(messages, fresh_every or per_flush):
            if fresh_every:
                forwarder = Forwarder(sink, service=Accepting())
            batches, dead = forwarder.shard_messages(flush)
            if dead:
                raise ValueError(f"{len(dead)} dead letters building the sink's requests: the load is broken")
            for (tenant, _), batch in batches.items():
                forwarder.send_shard(tenant, batch)
    return run
