"""The receiver's CPU per request to validate a body (no HTTP, no Pub/Sub): its one walk against the two it
replaced, on the same bodies in this process.

    python -m bench.receiver_walk [--repeats 7] [--requests 40]

  two walks: codec.decode(..., limits=...): snappy, the pre-scan (limits), then the full decode (columns,
             series-table entries with their archive heads, side data);
  one walk:  codec.validate(...): snappy, then the validate-only walk (limits as it goes, every rule, nothing
             built but the keys of new label sets).

Shapes: prom-500 and prom-2000 (one sample per series, as Prometheus sends; node_exporter-like labels, bench.load's
"node"), and 1000x10 (1000 series of 10 samples). Warm: the series table / known label sets kept across requests
(the receiver's steady state, label sets repeating); cold: new ones for every request (label sets never seen).
Figures are CPU seconds of this process (time.process_time, best of --repeats, the two paths run in turns: the
machine may be shared) per million samples.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from bench.archive_encode import best_of
from bench.load import SHAPES, build_stream
from transforms.core.protocol import MAX_DECOMPRESSED, Protocol
from transforms.core.wire import codec, prescan, snappy_block
from transforms.core.wire.batch import SeriesTable
from transforms.core.wire.builders import Series, build_v1
from transforms.core.wire.validate_only import KnownLabelSets
from transforms.core.wire.validation import NameValidation

LIMITS = prescan.RequestLimits()  # the receiver's defaults


def bodies_for(shape: str, requests: int) -> list[bytes]:
    if shape.startswith("prom-"):
        return build_stream(0, requests, 1_700_000_000_000, shape="node", series=int(shape.removeprefix("prom-")))
    labels = SHAPES["node"]
    return [codec.encode(build_v1([Series(labels(0, r % 4, i), [(1_700_000_000_000 + 15_000 * (10 * r + k), float(k))
                                                                  for k in range(10)]) for i in range(1000)]))
            for r in range(requests)]


def two_walks(bodies: list[bytes], warm: bool) -> Callable[[], None]:
    table = SeriesTable(NameValidation.UTF8)

    def run() -> None:
        for body in bodies:
            codec.decode(body, Protocol.V1, MAX_DECOMPRESSED, NameValidation.UTF8, LIMITS,
                         table if warm else SeriesTable(NameValidation.UTF8))
    return run


def one_walk(bodies: list[bytes], warm: bool) -> Callable[[], None]:
    known = KnownLabelSets(NameValidation.UTF8)

    def run() -> None:
        for body in bodies:
            codec.validate(body, Protocol.V1, MAX_DECOMPRESSED, LIMITS, known if warm else KnownLabelSets())
    return run


def decompress_only(bodies: list[bytes]) -> Callable[[], None]:
    def run() -> None:
        for body in bodies:
            snappy_block.decompress(body, MAX_DECOMPRESSED)
    return run


def paired_best(repeats: int, first: Callable[[], None], second: Callable[[], None]) -> tuple[float, float]:
    """The least CPU time of each of two runs, taken in turns, so that a shared machine's slow spells fall on
    both alike."""
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, run in enumerate((first, second)):
            started = time.process_time()
            run()
            best[i] = min(best[i], time.process_time() - started)
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver_walk", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="runs per figure; the least CPU is kept (default 7)")
    parser.add_argument("--requests", type=int, default=40, help="bodies per shape (default 40)")
    parser.add_argument("--shapes", nargs="*", default=["prom-500", "prom-2000", "1000x10"],
                        help="prom-N (N series of one sample) or 1000x10 (default: prom-500 prom-2000 1000x10)")
    args = parser.parse_args()
    print(f"{'shape':<10} {'state':<5} {'two walks':>10} {'one walk':>10} {'saved':>7} {'(snappy alone)':>15}"
          "   CPU-s per 1 M samples")
    for shape in args.shapes:
        bodies = bodies_for(shape, args.requests)
        samples = sum(codec.validate(b, Protocol.V1, MAX_DECOMPRESSED, LIMITS, KnownLabelSets()).counts.samples
                      for b in bodies)
        per_million = 1e6 / samples
        snappy = best_of(args.repeats, decompress_only(bodies)) * per_million
        for warm in (True, False):
            before, after = (t * per_million for t in paired_best(args.repeats, two_walks(bodies, warm),
                                                                    one_walk(bodies, warm)))
            print(f"{shape:<10} {'warm' if warm else 'cold':<5} {before:>10.4f} {after:>10.4f} "
                  f"{1 - after / before:>7.1%} {snappy:>15.4f}", flush=True)


if __name__ == "__main__":
    main()
