"""`python -m bench.mixed_request`: a request carrying one native histogram against a pure-float one, in process.

Two 1000-series remote-write requests (node_exporter-like labels, one float sample per series, 1.0 and 2.0
with per-sample start timestamps): pure float, and the same with series 500 a native-histogram series instead
(plus, with --exemplar, an exemplar on series 501). Each is timed, per request and in CPU time of this
thread (best of --repeat runs over --requests bodies with rising timestamps, tables warm), through:

- archive: decode (transforms.core.wire.codec.decode) + the NDJSON lines (BatchLines.convert), and the same
  with the Parquet blocks (ParquetFormat.convert);
- sink: decode + sharding + every request body encoded and snappy-compressed (the request builder's path up to
  the POST), for a sink of the request's own protocol.

The mixed/pure ratio is the issue's measure (target: within 1.5x). --whole also times the path every mixed
request took before the decoder's side data: the whole request through metric_to_log (tests/reference) and
through the sinks' protobuf path.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bench.load import SHAPES
from tests.histogram_helpers import make_histogram
from transforms.core.archive.format import archive_format
from transforms.core.metadata import TYPE_NUMBERS, MetadataStore
from transforms.core.protocol import MAX_DECOMPRESSED, Protocol
from transforms.core.sink import config
from transforms.core.sink.builder import RequestBuilder
from transforms.core.wire import codec, snappy_block
from transforms.core.wire.builders import Series, build_v1, build_v2

SERIES = 1000
SIDE = 500  # the series that carries the native histogram
URL = "http://127.0.0.1:9/api/v1/write"


def build(protocol: Protocol, mixed: bool, exemplar: bool, requests: int, start_ms: int) -> list[bytes]:
    """`requests` bodies of SERIES series (series SIDE a native histogram when `mixed`), timestamps rising."""
    labels = SHAPES["node"]
    bodies = []
    for j in range(requests):
        ts = start_ms + j * 15_000
        series = [Series(labels(0, 0, i), [] if mixed and i == SIDE else [(ts, float(i + j))],
                         metric_type="histogram" if mixed and i == SIDE else "counter") for i in range(SERIES)]
        request = (build_v1 if protocol is Protocol.V1 else build_v2)(series)
        if mixed:
            side = request.timeseries[SIDE]
            histogram = make_histogram(SIDE, j, ts, floats=False)
            if protocol is Protocol.V1:
                side.histograms.append(histogram)
            else:
                side.histograms.add().MergeFromString(histogram.SerializeToString())
                side.histograms[0].start_timestamp = start_ms - 60_000
        if exemplar:
            target = request.timeseries[SIDE + 1]
            if protocol is Protocol.V1:
                target.exemplars.add(timestamp=ts, value=0.5).labels.add(name="trace_id", value=f"t{j}")
            else:
                symbols = request.symbols
                refs = [len(symbols), len(symbols) + 1]
                symbols.extend(["trace_id", f"t{j}"])
                target.exemplars.add(timestamp=ts, value=0.5, labels_refs=refs)
        if protocol is Protocol.V2:
            for s in request.timeseries:
                for sample in s.samples:
                    sample.start_timestamp = start_ms - 60_000
                s.metadata.type = TYPE_NUMBERS["histogram" if mixed and s is request.timeseries[SIDE] else "counter"]
        bodies.append(codec.encode(request))
    return bodies


def best_of(repeats: int, run: Callable[[], None]) -> float:
    """The least CPU time of `repeats` runs (this thread's own: the machine is shared)."""
    times = []
    for _ in range(repeats):
        started = time.thread_time()
        run()
        times.append(time.thread_time() - started)
    return min(times)


def archive(bodies: list[bytes], protocol: Protocol, format_name: str) -> Callable[[], None]:
    fmt = archive_format(format_name)
    converter = fmt.converter(MetadataStore())

    def run() -> None:
        for body in bodies:
            batch = codec.decode(body, protocol, MAX_DECOMPRESSED, table=converter.table("t")).batch
            if format_name == "ndjson":
                converter.convert(batch, "t")  # the lines (packing is gzip, the same for both requests)
            else:
                fmt.convert(converter, batch, "t")
    return run


def archive_whole(bodies: list[bytes], protocol: Protocol) -> Callable[[], None]:
    """The path before side data: decode, then metric_to_log over the whole upb message."""
    from tests.reference.metric_to_log import convert

    store = MetadataStore()

    def run() -> None:
        for body in bodies:
            batch = codec.decode(body, protocol, MAX_DECOMPRESSED).batch
            convert(batch.message, protocol, "t", store, counts=batch.counts)
    return run


def sink(bodies: list[bytes], protocol: Protocol, whole: bool = False) -> Callable[[], None]:
    (sink_config,) = config.from_flags([URL], protocol=protocol.value)
    builder = RequestBuilder(sink_config, clock=lambda: datetime.now(UTC))
    attributes = {"protocol": protocol.value, "tenant": "t"}

    def run() -> None:
        for body in bodies:
            if whole:  # the path before side data: the whole request through upb and per-series Python
                payload = snappy_block.decompress(body, MAX_DECOMPRESSED)
                batches: dict = {}
                builder.shard_parsed(payload, codec.parse(payload, protocol), protocol, "t", batches)
            else:
                batches, _ = builder.shard_messages([(body, attributes)])
            for (tenant, _), batch in batches.items():
                for request in builder.plan(batch):
                    builder.body(tenant, request, protocol)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mixed_request", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40, help="bodies per run (default 40)")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best is kept (default 5)")
    parser.add_argument("--exemplar", action="store_true", help="the mixed request also carries an exemplar")
    parser.add_argument("--whole", action="store_true", help="also time the whole-request slow path of before")
    args = parser.parse_args()
    start_ms = int(time.time() * 1000) - 10 * 60 * 1000
    print(f"{SERIES}-series requests, one native-histogram series in the mixed one; ms of CPU per request, "
          f"best of {args.repeat} runs over {args.requests} requests")
    print(f"{'protocol':<9}{'path':<22}{'pure float':>11}{'mixed':>9}{'ratio':>7}" + ("  whole-request (before)"
                                                                                  if args.whole else ""))
    for protocol in (Protocol.V1, Protocol.V2):
        pure = build(protocol, False, False, args.requests, start_ms)
        mixed = build(protocol, True, args.exemplar, args.requests, start_ms)
        paths: list[tuple[str, Callable[[list[bytes]], Callable[[], None]], Callable[[], None] | None]] = [
            ("decode + lines", lambda b, p=protocol: archive(b, p, "ndjson"),
             archive_whole(mixed, protocol) if args.whole else None),
            ("decode + parquet", lambda b, p=protocol: archive(b, p, "parquet"), None),
            ("decode + sink bodies", lambda b, p=protocol: sink(b, p),
             sink(mixed, protocol, whole=True) if args.whole else None)]
        for name, make, before in paths:
            pure_s = best_of(args.repeat, make(pure)) / args.requests
            mixed_s = best_of(args.repeat, make(mixed)) / args.requests
            line = f"{protocol.value:<9}{name:<22}{1000 * pure_s:>11.3f}{1000 * mixed_s:>9.3f}{mixed_s / pure_s:>7.2f}"
            if before is not None:
                whole_s = best_of(args.repeat, before) / args.requests
                line += f"  {1000 * whole_s:.3f} ({whole_s / pure_s:.1f}x pure)"
            print(line)


if __name__ == "__main__":
    main()
