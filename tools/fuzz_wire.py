"""`make fuzz`: mutated remote-write bodies through the compiled decode + validate (transforms.core.wire._wire).

A seed corpus of valid 1.0 and 2.0 payloads (every field kind: labels, 2 KiB values, UTF-8 names, samples
with special values, start timestamps, histograms, exemplars, metadata) is mutated at random (byte flips,
cuts, inserts, duplicated spans, varint bombs, lengths past the end). Each body goes through the pre-scan
with the receiver's limits and the compiled decoder, and through the receiver's one walk (validate-only,
the limits applied as it goes), whose outcome must be the same; an accepted one also through the compiled archive
lines, the reader's XOR chunks (their Chunk fields against protobuf's) and the sink path (requests planned,
encoded, and decoded again to the same label sets and samples), and its lines, as they are and mutated,
through the restore's compiled line parser (every line of a float batch taken back, a mutated one taken or
declined).
The only acceptable outcomes are acceptance, a documented client error (InvalidPayload 400, PayloadTooLarge
413) or a dead letter (ConversionError). Anything else, or one body taking over a second, is a failure.
`--sanitize` rebuilds the module with AddressSanitizer and UndefinedBehaviorSanitizer (any undefined behaviour
aborts; -fno-wrapv, so a signed overflow counts too) and re-runs under them with Python's allocator off
(PYTHONMALLOC=malloc: every object and buffer is its own malloc block ASan can guard) and a leak check at
the end of the run, while the interpreter is still alive: memory the run lost (a bytes, str or int object
or a buffer the module never freed) is a failure, memory CPython still holds is not. The sanitized run also
decodes each seed body with each of its allocations failing in turn (every error path, checked for leaks);
tools/lsan_suppressions.txt lists the few leaks CPython itself has on those paths.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import math
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from transforms.core.archive.lines import BatchLines
from transforms.core.archive.metric_to_log import ConversionError
from transforms.core.errors import InvalidPayload, PayloadTooLarge
from transforms.core.metadata import MetadataStore
from transforms.core.protocol import STALE_NAN, Protocol
from transforms.core.sink.columns import DROPPED, Columns, ColumnShard, SinkSeries
from transforms.core.wire import batch, line_columns, prescan, validate_only, xor_chunks
from transforms.core.wire.proto import remote_read_pb2, remote_v1_pb2, remote_v2_pb2
from transforms.core.wire.validation import Counts, NameValidation

SLOW_BODY_SECONDS = 1.0


def seed_corpus() -> list[tuple[Protocol, bytes]]:
    v1 = remote_v1_pb2.WriteRequest()
    for i, value in enumerate([1.5, float("nan"), STALE_NAN, float("inf"), -0.0, 1e300]):
        series = v1.timeseries.add()
        series.labels.add(name="__name__", value=f"metric_{i}")
        series.labels.add(name="job", value="v" * (2048 if i == 0 else 3))
        series.labels.add(name="名", value="")
        series.samples.add(value=value, timestamp=1_700_000_000_000 + i)
    rich = v1.timeseries[0]
    rich.exemplars.add(value=2.0, timestamp=5).labels.add(name="trace_id", value="abc")
    h = rich.histograms.add(count_int=3, sum=1.5, schema=1, timestamp=7)
    h.positive_spans.add(offset=0, length=2)
    h.positive_deltas.extend([1, -1])
    h.negative_counts.extend([1.0])
    v1.metadata.add(type=1, metric_family_name="metric_0", help="help", unit="s")

    v2 = remote_v2_pb2.Request()
    v2.symbols.extend(["", "__name__", "up", "job", "api", "help", "seconds", "trace_id", "t1"])
    series = v2.timeseries.add(labels_refs=[1, 2, 3, 4], created_timestamp=3)
    series.samples.add(value=1.0, timestamp=10, start_timestamp=5)
    series.samples.add(value=STALE_NAN, timestamp=11)
    series.exemplars.add(labels_refs=[7, 8], value=1.0, timestamp=10)
    series.metadata.type = 1
    series.metadata.help_ref = 5
    series.metadata.unit_ref = 6
    hist = v2.timeseries.add(labels_refs=[1, 2])
    hist.histograms.add(count_float=2.5, zero_count_int=1, timestamp=12).positive_spans.add(offset=-1, length=1)
    return [(Protocol.V1, v1.SerializeToString()), (Protocol.V2, v2.SerializeToString())]


def mutate(payload: bytes, rng: random.Random) -> bytes:
    data = bytearray(payload)
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(data))
        action = rng.randrange(6)
        if action == 0 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif action == 1:
            del data[at:at + rng.randint(1, 16)]
        elif action == 2:
            data[at:at] = rng.randbytes(rng.randint(1, 12))
        elif action == 3 and data:  # a span repeated: more series/samples/labels than before
            end = min(len(data), at + rng.randint(1, 64))
            data[at:at] = data[at:end] * rng.randint(1, 8)
        elif action == 4:  # a varint that never ends, or one past 64 bits
            data[at:at] = b"\xff" * rng.randint(1, 12)
        else:  # a length prefix pointing past the end
            data[at:at] = bytes([0x0A]) + bytes([rng.randint(0x40, 0x7F)])
    return bytes(data)


def float_corpus() -> list[tuple[Protocol, bytes]]:
    """Float samples only (no histogram or exemplar): batches whose archive lines the compiled code formats."""
    v1 = remote_v1_pb2.WriteRequest()
    v2 = remote_v2_pb2.Request(symbols=["", "__name__", "up", "job", "api"])
    for i in range(20):
        series = v1.timeseries.add()
        series.labels.add(name="__name__", value="up")
        series.labels.add(name="instance", value=f"host-{i}:9100")
        series.samples.add(value=float(i), timestamp=1_700_000_000_000 + i)
        v2.symbols.append(f"host-{i}:9100")
        v2_series = v2.timeseries.add(labels_refs=[1, 2, 3, len(v2.symbols) - 1])
        v2_series.samples.add(value=float(i), timestamp=1_700_000_000_000 + i, start_timestamp=1_699_999_999_000)
    return [(Protocol.V1, v1.SerializeToString()), (Protocol.V2, v2.SerializeToString())]


def fail_each_allocation(limit: int = 100_000) -> int:
    """Decode each seed body (and format the archive lines of the float-only ones) with its 1st, 2nd, ...
    allocation failing, until one run succeeds: each failure must be a MemoryError (under the sanitizers the
    error paths are then checked for leaks and bad frees too). Returns the number of failed runs."""
    failed = 0
    for protocol, payload in seed_corpus() + float_corpus():
        failed += _failing_until_it_succeeds(functools.partial(_one_walk, protocol, payload), limit,
                                             f"{protocol.value}: the one walk")
        failed += _failing_until_it_succeeds(functools.partial(_decode_and_format, protocol, payload), limit,
                                             f"{protocol.value}: decode and lines")
    return failed


def _one_walk(protocol: Protocol, payload: bytes) -> Callable[[], object]:
    """The receiver's one walk, with a fresh known set."""
    known = validate_only.KnownLabelSets(limit=10_000)
    return lambda: validate_only.validate(payload, protocol, known, prescan.RequestLimits())


def _decode_and_format(protocol: Protocol, payload: bytes) -> Callable[[], object]:
    """The pipeline's decode and archive lines, with fresh containers (new series each run)."""
    lines = BatchLines(MetadataStore(), series_limit=10_000)
    table = lines.table("fuzz")

    def work() -> None:
        decoded = batch.decode(payload, protocol, table)
        if not decoded.slow:  # the slower path's upb parse turns a failed allocation into other errors
            for block in lines.convert(decoded, "fuzz").values():
                line_columns.parse(block.data, SPECIALS)
    return work


def _failing_until_it_succeeds(prepare: Callable[[], Callable[[], object]], limit: int, what: str) -> int:
    """Runs the work `prepare` sets up (allocations working) with its nth allocation failing, n = 0, 1, ...
    until it succeeds; every failure must be a MemoryError. Returns how many runs failed."""
    import _testcapi  # CPython's test helper: set_nomemory(start, stop) fails allocations [start, stop)

    for nth in range(limit):
        work = prepare()
        _testcapi.set_nomemory(nth, nth + 1)
        try:
            work()
        except MemoryError:
            continue
        finally:
            _testcapi.remove_mem_hooks()
        return nth
    raise AssertionError(f"{what}: still failing after {limit} allocations")


# the line parser's value strings (records.py has the archive's full table; any table exercises the parser)
SPECIALS = {"+Inf": math.inf, "-Inf": -math.inf, "StaleNaN": STALE_NAN}
MUTATED_BLOCKS = 10  # mutated copies of each block of lines (few bodies are accepted: each gives several)


def parse_back(blocks: dict, float_only: bool, rng: random.Random) -> None:
    """A batch's archive lines through the restore's compiled line parser: as written, a float-only batch's
    lines are all taken (one sample each); mutated, each line is taken or declined, and nothing crashes."""
    for block in blocks.values():
        parsed = line_columns.parse(block.data, SPECIALS)
        if len(parsed.timestamps) + len(parsed.declined) != block.lines or (float_only and len(parsed.declined)):
            raise AssertionError(f"{block.lines} lines parsed back as {len(parsed.timestamps)} samples and "
                                 f"{len(parsed.declined)} declined")
        for _ in range(MUTATED_BLOCKS):
            data = mutate(block.data, rng)
            mutated = line_columns.parse(data, SPECIALS)
            if (mutated.runs >= len(mutated.names)).any() or (mutated.declined[:, :2] > len(data)).any():
                raise AssertionError("the line parser's output points past its input")


REQUEST_SAMPLES = 3  # small sink requests, so most accepted bodies are cut into several


def forward(decoded: batch.Batch, table: batch.SeriesTable, sinks: SinkSeries) -> int:
    """The sink path on an accepted batch (routed with no rules, ordered, cut into requests, encoded in the
    batch's protocol: the compiled plan_requests and encoders); each request is decoded again and must hold
    the label sets and samples it was made from. Returns the number of requests."""
    if not decoded.counts.samples:  # nothing for a sink (a ColumnShard is never given an empty part)
        return 0
    ids = sinks.route(np.frombuffer(decoded.series_slot, np.int32), decoded.labels, table.generation)
    if (ids == DROPPED).any():
        raise AssertionError("a series was dropped by a sink with no rules")
    shard = ColumnShard(sinks)
    shard.add(Columns(ids[np.frombuffer(decoded.sample_series, np.uint32)].astype(np.uint32),
                      np.frombuffer(decoded.timestamps, np.int64), np.frombuffer(decoded.values, np.uint64),
                      None if decoded.starts is None else np.frombuffer(decoded.starts, np.int64)))
    requests = 0
    for request in shard.requests(REQUEST_SAMPLES, 1 << 20):
        body = request.encode(decoded.protocol, lambda family: None)
        again = batch.decode(body, decoded.protocol, batch.SeriesTable())
        cols, lo, hi = request.cols, request.lo, request.hi
        series = cols.series[lo:hi]
        runs = series[np.r_[True, series[1:] != series[:-1]]].tolist()
        labels = [again.labels[slot] for slot in np.frombuffer(again.series_slot, np.int32).tolist()]
        if labels != [sinks.labels[i] for i in runs]:
            raise AssertionError(f"request {requests}: label sets differ after encode + decode")
        if again.timestamps != cols.timestamps[lo:hi].tobytes() or again.values != cols.bits[lo:hi].tobytes():
            raise AssertionError(f"request {requests}: samples differ after encode + decode")
        requests += 1
    return requests


def xor_encode(decoded: batch.Batch, rng: random.Random) -> int:
    """An accepted batch's samples (any int64 times, in wire order: deltas wrap) as the reader's XOR chunks, cut
    every 1..200 samples; the Chunk fields must equal protobuf's serialization of the same chunks. Returns the
    number of chunks."""
    stamps = np.frombuffer(decoded.timestamps, np.int64)
    values = np.frombuffer(decoded.values, np.float64)
    per_chunk = rng.randint(1, 200)
    chunks = xor_chunks.chunks(stamps, values, per_chunk)
    if len(chunks) != -(-len(stamps) // per_chunk):
        raise AssertionError(f"{len(chunks)} XOR chunks for {len(stamps)} samples of {per_chunk}")
    expected = remote_read_pb2.ChunkedSeries(chunks=[
        remote_read_pb2.Chunk(min_time_ms=lo, max_time_ms=hi, type=remote_read_pb2.Chunk.XOR, data=data)
        for lo, hi, data in chunks]).SerializeToString()
    if xor_chunks.chunk_fields(stamps, values, per_chunk) != expected:
        raise AssertionError("XOR chunk fields differ from protobuf's serialization")
    return len(chunks)


Outcome = Counts | tuple[type, str]


def one_walk(body: bytes, protocol: Protocol, known: validate_only.KnownLabelSets,
             limits: prescan.RequestLimits) -> Outcome:
    try:
        return validate_only.validate(body, protocol, known, limits)
    except (InvalidPayload, PayloadTooLarge) as exc:
        return type(exc), exc.message


def same_outcome(walked: Outcome, two_walks: Outcome) -> None:
    if walked != two_walks:
        raise AssertionError(f"the one walk gave {walked}, the pre-scan + decode {two_walks}")


def run(bodies: int, seed: int, report_every: int = 0) -> dict[str, int]:
    """Mutate and decode `bodies` payloads; raises AssertionError on anything but accept/400/413."""
    rng = random.Random(seed)
    corpus = seed_corpus()
    # the receiver's defaults, and small ones so that duplicated spans also cross them (413)
    limit_sets = (prescan.RequestLimits(),
                  prescan.RequestLimits(series=12, samples=12, labels=40, symbols=12, buckets=8))
    lines = BatchLines(MetadataStore(), series_limit=10_000)
    tables = {NameValidation.LEGACY: batch.SeriesTable(NameValidation.LEGACY, limit=10_000),
              NameValidation.UTF8: lines.table("fuzz")}
    known = {mode: validate_only.KnownLabelSets(mode, limit=10_000) for mode in tables}
    sinks = {mode: SinkSeries(rules=(), shards=1, limit=10_000) for mode in tables}
    line_rng = random.Random(seed ^ 0x5EED)  # apart from the bodies' own, so their sequence stays the seed's
    xor_rng = random.Random(seed ^ 0x0C0)  # the XOR chunks' cuts, apart from both
    outcomes = {"accepted": 0, "400": 0, "413": 0, "dead-lettered": 0, "sink requests": 0, "xor chunks": 0}
    slowest = 0.0
    for n in range(bodies):
        protocol, payload = corpus[n % len(corpus)]
        body = mutate(payload, rng)
        mode = NameValidation.LEGACY if n % 3 == 0 else NameValidation.UTF8
        started = time.perf_counter()
        try:
            walked = one_walk(body, protocol, known[mode], limit_sets[n % 2])
            try:
                counts = prescan.check(body, protocol, limit_sets[n % 2])
                decoded = batch.decode(body, protocol, tables[mode], counts.samples)
            except (InvalidPayload, PayloadTooLarge) as exc:
                same_outcome(walked, (type(exc), exc.message))
                raise
            same_outcome(walked, decoded.counts)
            outcomes["accepted"] += 1
            sinks[mode].make_room()
            outcomes["sink requests"] += forward(decoded, tables[mode], sinks[mode])
            outcomes["xor chunks"] += xor_encode(decoded, xor_rng)
            if mode is NameValidation.UTF8:  # what the pipeline archives: the compiled lines too
                parse_back(lines.convert(decoded, "fuzz"), not decoded.slow, line_rng)
        except InvalidPayload:
            outcomes["400"] += 1
        except PayloadTooLarge:
            outcomes["413"] += 1
        except ConversionError:  # a timestamp outside datetime's range: the pipeline dead-letters it
            outcomes["dead-lettered"] += 1
        except Exception as exc:
            raise AssertionError(f"body {n} (seed {seed}, {protocol.value}): {exc!r}; bytes {body.hex()}") from exc
        elapsed = time.perf_counter() - started
        slowest = max(slowest, elapsed)
        if elapsed > SLOW_BODY_SECONDS:
            raise AssertionError(f"body {n} (seed {seed}) took {elapsed:.2f}s; bytes {body.hex()}")
        if report_every and (n + 1) % report_every == 0:
            print(f"  {n + 1:>10,} bodies: {outcomes}", flush=True)
    outcomes["slowest_us"] = int(slowest * 1e6)
    return outcomes


SANITIZE = "-fsanitize=address,undefined"
SANITIZER_CFLAGS = f"{SANITIZE} -fno-sanitize-recover=undefined -fno-wrapv -fno-omit-frame-pointer -g -O1"
LSAN_SUPPRESSIONS = Path(__file__).resolve().parent / "lsan_suppressions.txt"  # CPython's own leaks only
SANITIZER_ENV = {
    "PYTHONMALLOC": "malloc",
    "LSAN_OPTIONS": f"suppressions={LSAN_SUPPRESSIONS}:print_suppressions=0",
    # leaks are checked by leak_check() while the interpreter lives, not at exit, where CPython's own
    # never-freed startup allocations would be reported too
    "ASAN_OPTIONS": "detect_leaks=1:leak_check_at_exit=0:abort_on_error=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}


def build_with_sanitizers(work: Path) -> str:
    """A copy of the sources in `work` with the module built in place under ASan + UBSan; returns the libasan
    to preload (Python itself is not instrumented, and ASan's runtime must come first)."""
    root = Path(__file__).resolve().parents[1]
    for part in ("transforms", "tools"):
        shutil.copytree(root / part, work / part, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copy(root / "setup.py", work)
    env = dict(os.environ, CFLAGS=SANITIZER_CFLAGS, LDFLAGS=SANITIZE)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace", "--parallel", str(os.cpu_count() or 1)],
                   cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)
    return subprocess.run([sysconfig.get_config_var("CC").split()[0], "-print-file-name=libasan.so"],
                          capture_output=True, text=True, check=True).stdout.strip()


def run_under_sanitizers(bodies: int, seed: int, capture: bool = False) -> subprocess.CompletedProcess:
    """Builds the sanitized copy in a temporary directory and fuzzes it there, in a child process that preloads
    libasan; its output is printed as it comes, or captured."""
    with tempfile.TemporaryDirectory(prefix="wire-sanitize-") as work:
        libasan = build_with_sanitizers(Path(work))
        env = dict(os.environ, LD_PRELOAD=libasan, **SANITIZER_ENV)
        argv = [sys.executable, "-m", "tools.fuzz_wire", "--bodies", str(bodies), "--seed", str(seed), "--leak-check"]
        if not capture:
            print(f"under AddressSanitizer + UndefinedBehaviorSanitizer ({libasan}), sources copied to {work}",
                  flush=True)
        return subprocess.run(argv, env=env, cwd=work, capture_output=capture, text=True)


def leak_check() -> int:
    """LeakSanitizer's check now (only under a preloaded libasan): nonzero if memory was lost, reported on stderr.

    LeakSanitizer scans the C stacks, globals and the heap, but not CPython's frame stack (mmap'd chunks), so
    an object held only by a live Python frame's local and not tracked by the GC (an int, a float, a dict of
    them) would be reported: call this where no such local is alive. For the same reason a lost GC-tracked
    container (a tuple, list or dict, linked into the GC's lists) is not reported; lost bytes, str, int
    objects and the module's own buffers are."""
    return ctypes.CDLL(None).__lsan_do_recoverable_leak_check()


def run_and_report(bodies: int, seed: int, error_paths: bool) -> None:
    started = time.perf_counter()
    outcomes = run(bodies, seed, report_every=max(bodies // 10, 1))
    print(f"{bodies:,} mutated bodies in {time.perf_counter() - started:.0f}s, no crash or hang: {outcomes}")
    if error_paths:
        print(f"{fail_each_allocation()} decodes with one allocation failing: each a MemoryError")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.fuzz_wire", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bodies", type=int, default=1_000_000, help="mutated bodies (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=12, help="random seed (default 12)")
    parser.add_argument("--sanitize", "--asan", action="store_true",
                        help="rebuild with AddressSanitizer + UndefinedBehaviorSanitizer, run under them, check leaks")
    parser.add_argument("--leak-check", action="store_true", help=argparse.SUPPRESS)  # the sanitized child's run
    args = parser.parse_args()
    if args.sanitize:
        sys.exit(run_under_sanitizers(args.bodies, args.seed).returncode)
    run_and_report(args.bodies, args.seed, error_paths=args.leak_check)
    if args.leak_check:  # here, with the run's results gone with its frame (see leak_check)
        if leak_check():
            sys.exit("LeakSanitizer: the run lost memory (allocations above)")
        print("LeakSanitizer: no memory lost")


if __name__ == "__main__":
    main()
