"""`python -m bench.archive_encode`: an archive format's encoder alone, samples/s on this thread (one core).

Over the same 1000-series remote-write 1.0 bodies as bench.pipeline (decoded once, beforehand), it times
the two halves of a format's work in the pipeline: `convert` (a decoded batch -> packed blocks per
partition, in DecodeToRecords) and `file_chunks` (a partition's blocks -> the file's bytes, in
WriteArchiveFiles), and the reference Parquet encoder (json.loads of each NDJSON line, tests/reference)
when asked. --profile adds a cProfile of the format's encoder.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bench.load import SERIES_PER_REQUEST, SHAPES, build_stream
from transforms.core.archive.format import FORMATS, archive_format
from transforms.core.metadata import MetadataStore
from transforms.core.protocol import MAX_DECOMPRESSED, Protocol
from transforms.core.wire import codec


def best_of(repeats: int, run: Callable[[], Any]) -> float:
    """The least CPU time of `repeats` runs, in seconds: this process's own (the machine is shared, so wall
    time would count other processes' turns), and the best run is the cleanest."""
    times = []
    for _ in range(repeats):
        started = time.process_time()
        run()
        times.append(time.process_time() - started)
    return min(times)


def encode(format_name: str, bodies: list[bytes], profiler: cProfile.Profile | None = None) -> dict[str, float]:
    fmt = archive_format(format_name)
    converter = fmt.converter(MetadataStore())
    batches = [codec.decode(body, Protocol.V1, MAX_DECOMPRESSED, table=converter.table("default")).batch
               for body in bodies]
    grouped: dict[Any, list] = defaultdict(list)

    def convert() -> None:
        grouped.clear()
        for batch in batches:
            for partition, block in fmt.convert(converter, batch, "default").items():
                grouped[partition].append(block)

    def files() -> None:
        for blocks in grouped.values():
            for _ in fmt.file_chunks(blocks)[0]:
                pass

    if profiler:
        profiler.enable()
        convert()
        files()
        profiler.disable()
    return {"convert": best_of(3, convert), "files": best_of(3, files)}


def reference_parquet(bodies: list[bytes]) -> float:
    """Seconds of the record-built Parquet file (json.loads per line) over the bodies' NDJSON lines."""
    from tests.reference.parquet_records import encode_table
    from transforms.core.archive import parquet

    fmt = archive_format("ndjson")
    converter = fmt.converter(MetadataStore())
    records: dict[Any, list[str]] = defaultdict(list)
    for body in bodies:
        batch = codec.decode(body, Protocol.V1, MAX_DECOMPRESSED, table=converter.table("default")).batch
        for partition, block in converter.convert(batch, "default").items():
            records[partition] += block.records()
    return best_of(1, lambda: [parquet.table_bytes(encode_table(r)) for r in records.values()])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.archive_encode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200, help="1000-series requests (default 200)")
    parser.add_argument("--shapes", default="small,node", help="small and/or node, as bench.pipeline")
    parser.add_argument("--formats", default=",".join(FORMATS), help="formats to time (default all)")
    parser.add_argument("--reference", action="store_true", help="also time the record-built Parquet encoder")
    parser.add_argument("--profile", action="store_true", help="cProfile each format's encoder (top 12)")
    args = parser.parse_args()
    start_ms = int(time.time() * 1000) - 10 * 60 * 1000
    for shape in (s for s in args.shapes.split(",") if s):
        if shape not in SHAPES:
            parser.error(f"unknown shape {shape!r}: use {sorted(SHAPES)}")
        bodies = build_stream(0, args.messages, start_ms, shape=shape)
        samples = args.messages * SERIES_PER_REQUEST
        print(f"\n== {shape}: {args.messages} requests of {SERIES_PER_REQUEST} series, "
              "CPU time of this process, best of 3")
        for name in (f for f in args.formats.split(",") if f):
            profiler = cProfile.Profile() if args.profile else None
            took = encode(name, bodies, profiler)
            total = took["convert"] + took["files"]
            print(f"  {name:<8} {samples / total:>12,.0f} samples/s   (convert {samples / took['convert']:,.0f}/s, "
                  f"files {samples / took['files']:,.0f}/s)")
            if profiler:
                pstats.Stats(profiler).strip_dirs().sort_stats("tottime").print_stats(12)
        if args.reference:
            print(f"  {'parquet, record-built (reference)':<8} {samples / reference_parquet(bodies):>12,.0f} samples/s")


if __name__ == "__main__":
    main()
