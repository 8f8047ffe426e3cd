"""`make fuzz`: mutated remote-write bodies through the compiled decode + validate (transforms.core.wire._wire).

A seed corpus of valid 1.0 and 2.0 payloads (every field kind: labels, 2 KiB values, UTF-8 names, samples
with special values, start timestamps, histograms, exemplars, metadata) is mutated at random (byte flips,
cuts, inserts, duplicated spans, varint bombs, lengths past the end). Each body goes through the pre-scan
with the receiver's limits and the compiled decoder (and, accepted, the compiled archive lines); the only
acceptable outcomes are acceptance, a documented client error (InvalidPayload 400, PayloadTooLarge 413)
or a dead letter (ConversionError). Anything else, or one body taking over a second, is a failure.
`--asan` rebuilds the module with AddressSanitizer and re-runs under it.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from transforms.core.archive.lines import BatchLines
from transforms.core.archive.metric_to_log import ConversionError
from transforms.core.errors import InvalidPayload, PayloadTooLarge
from transforms.core.metadata import MetadataStore
from transforms.core.protocol import STALE_NAN, Protocol
from transforms.core.wire import batch, prescan
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2
from transforms.core.wire.validation import NameValidation

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
    outcomes = {"accepted": 0, "400": 0, "413": 0, "dead-lettered": 0}
    slowest = 0.0
    for n in range(bodies):
        protocol, payload = corpus[n % len(corpus)]
        body = mutate(payload, rng)
        mode = NameValidation.LEGACY if n % 3 == 0 else NameValidation.UTF8
        started = time.perf_counter()
        try:
            counts = prescan.check(body, protocol, limit_sets[n % 2])
            decoded = batch.decode(body, protocol, tables[mode], counts.samples)
            outcomes["accepted"] += 1
            if mode is NameValidation.UTF8:  # what the pipeline archives: the compiled lines too
                lines.convert(decoded, "fuzz")
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


def build_with_asan(work: Path) -> str:
    """A copy of the sources in `work` with the module built in place with -fsanitize=address; returns the
    libasan to preload (Python itself is not instrumented)."""
    root = Path(__file__).resolve().parents[1]
    for part in ("transforms", "tools"):
        shutil.copytree(root / part, work / part, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copy(root / "setup.py", work)
    env = dict(os.environ, CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g -O1", LDFLAGS="-fsanitize=address")
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=work, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return subprocess.run([sysconfig.get_config_var("CC").split()[0], "-print-file-name=libasan.so"],
                          capture_output=True, text=True, check=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.fuzz_wire", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bodies", type=int, default=1_000_000, help="mutated bodies (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=12, help="random seed (default 12)")
    parser.add_argument("--asan", action="store_true", help="rebuild with AddressSanitizer and run under it")
    args = parser.parse_args()
    if args.asan:
        with tempfile.TemporaryDirectory(prefix="wire-asan-") as work:
            libasan = build_with_asan(Path(work))
            env = dict(os.environ, LD_PRELOAD=libasan, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1")
            argv = [sys.executable, "-m", "tools.fuzz_wire", "--bodies", str(args.bodies), "--seed", str(args.seed)]
            print(f"under AddressSanitizer ({libasan}), sources copied to {work}", flush=True)
            sys.exit(subprocess.run(argv, env=env, cwd=work).returncode)
    started = time.perf_counter()
    outcomes = run(args.bodies, args.seed, report_every=max(args.bodies // 10, 1))
    print(f"{args.bodies:,} mutated bodies in {time.perf_counter() - started:.0f}s, no crash or hang: {outcomes}")


if __name__ == "__main__":
    main()
