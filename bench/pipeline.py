"""`make bench-pipeline`: archived samples/s of the pipeline, against the raw decode rate.

N pre-built 1000-series remote-write 1.0 requests are published to the Pub/Sub emulator as a
backlog, with the receiver's attributes, once per message size: ~12 KiB (6 short labels) and
~44 KiB (10 node_exporter-like labels, what Prometheus sends with max_samples_per_send: 1000).
The local loop (pipeline.local_loop, DirectRunner) then
runs in-process until every sample is in a finalised archive file and acked. The reference is
snappy decompress + protobuf parse alone, on one core, over the same bodies. Extra arguments
(e.g. --direct_num_workers=2) are passed on to the pipeline.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions

from bench.load import SERIES_PER_REQUEST, SHAPES, build_stream
from tools import archive, services
from transforms.beam.archive import DecodeToRecords, WriteArchiveFiles
from transforms.core.archive.format import FORMATS
from transforms.core.protocol import MAX_DECOMPRESSED, Protocol, format_ms
from transforms.core.wire import codec, snappy_block

PROJECT = "bench-project"


def raw_decode_rate(bodies: list[bytes], min_seconds: float = 2.0) -> float:
    """Samples/s of snappy decompress + protobuf parse only, on this thread (one core)."""
    samples = passes = 0
    started = time.perf_counter()
    while passes == 0 or time.perf_counter() - started < min_seconds:
        for body in bodies:
            message = codec.parse(snappy_block.decompress(body, MAX_DECOMPRESSED), Protocol.V1)
            samples += len(message.timeseries)  # one sample per series in this load
        passes += 1
    return samples / (time.perf_counter() - started)


def _peak_rss_mib() -> float:
    """This process's peak resident memory so far (the local runner runs in-process)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def publish_backlog(topic: str, bodies: list[bytes]) -> None:
    """Publish every body with the attributes the receiver would give it, and wait for all."""
    from google.cloud import pubsub_v1  # after create_topic_and_subscription set PUBSUB_EMULATOR_HOST

    received_at = format_ms(time.time_ns() // 1_000_000)
    publisher = pubsub_v1.PublisherClient()
    try:
        futures = []
        for body in bodies:
            counts = codec.decode(body, Protocol.V1, MAX_DECOMPRESSED).counts
            attributes = codec.message_attributes(Protocol.V1, "default", received_at, counts)
            futures.append(publisher.publish(topic, body, **attributes))
        for future in futures:
            future.result(timeout=60)
    finally:
        publisher.transport.close()


def run_pipeline(options: PipelineOptions, expected: int, timeout: float) -> dict[str, Any]:
    """Run the local loop on a thread until `expected` samples are archived and acked; then stop it."""
    from pipeline.local_loop import LocalLoop

    done = threading.Event()
    runs: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def on_run(stats: dict[str, Any]) -> None:
        runs.append(stats)
        print(f"   run {len(runs)}: {stats['messages']} messages, {stats['samples']:,} samples, "
              f"{stats['files']} files in {stats['seconds']:.1f}s", flush=True)
        if stats["total_samples"] >= expected:
            done.set()

    loop = LocalLoop(options, on_run=on_run)

    def target() -> None:
        try:
            loop.run()
        except BaseException as exc:  # re-raised on the main thread
            errors.append(exc)
            done.set()

    thread = threading.Thread(target=target, name="local-loop", daemon=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    thread.start()
    try:
        if not done.wait(timeout):
            raise services.ServiceError(f"pipeline archived {loop.totals.get('samples', 0)} of {expected} "
                                        f"samples within {timeout:.0f}s")
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        loop.stop()
        thread.join(60)
    if errors:
        raise errors[0]
    return {"seconds": elapsed, "runs": runs, "busy": sum(r["seconds"] for r in runs),
            "samples_per_second": runs[-1]["total_samples"] / elapsed,
            # CPU time of this process (every thread of the in-process runner): on a shared machine the
            # steadier measure of what the pipeline costs
            "samples_per_cpu_second": runs[-1]["total_samples"] / cpu}


def conversion_core(bodies: list[bytes], scratch: Path, profiler: cProfile.Profile | None = None,
                    archive_format: str = "ndjson") -> float:
    """Seconds for one bounded run's worth of the core: DecodeToRecords, then WriteArchiveFiles."""
    messages = [PubsubMessage(body, {"protocol": "1.0", "tenant": "default"}, message_id=str(i))
                for i, body in enumerate(bodies)]
    decode = DecodeToRecords(archive_format=archive_format)
    write = WriteArchiveFiles(str(scratch), lambda window, pane: "core", archive_format=archive_format)
    decode.setup()
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    grouped: dict[Any, list[list[str]]] = defaultdict(list)
    for message in messages:
        for partition, records in decode.process(message):
            grouped[partition].append(records)
    for element in grouped.items():
        list(write.process(element, window=None, pane=None))
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    shutil.rmtree(scratch, ignore_errors=True)
    return elapsed


def bench_shape(shape: str, args: argparse.Namespace, beam_args: list[str], host: str, work: Path) -> dict[str, Any]:
    """One message size: raw decode, the pipeline over a published backlog, the conversion core."""
    expected = args.messages * SERIES_PER_REQUEST
    start_ms = int(time.time() * 1000) - 10 * 60 * 1000
    bodies = build_stream(0, args.messages, start_ms, shape=shape)
    size_kib = sum(map(len, bodies)) / len(bodies) / 1024
    print(f"\n== {shape}: {args.messages} requests of {SERIES_PER_REQUEST} series, "
          f"{size_kib:.1f} KiB per message (snappy)", flush=True)
    print("-> raw decode (snappy + protobuf parse, one core)", flush=True)
    raw = raw_decode_rate(bodies)
    print(f"   {raw:>12,.0f} samples/s", flush=True)
    archive_path = str(work / f"archive-{shape}")
    topic, subscription = f"projects/{PROJECT}/topics/bench-{shape}", f"projects/{PROJECT}/subscriptions/bench-{shape}"
    services.create_topic_and_subscription(host, topic, subscription)
    print(f"-> publishing {args.messages} messages to {host} ...", flush=True)
    publish_backlog(topic, bodies)
    print(f"-> pipeline: DirectRunner, window {args.window_size}s, max_batch_samples {args.max_batch_samples}"
          f"{' ' + ' '.join(beam_args) if beam_args else ''}", flush=True)
    options = PipelineOptions(["--runner=DirectRunner", f"--input_subscription={subscription}",
                               f"--archive_path={archive_path}", f"--window_size={args.window_size}",
                               f"--max_batch_samples={args.max_batch_samples}",
                               f"--archive_format={args.archive_format}", *beam_args])
    rss_before = _peak_rss_mib()
    result = run_pipeline(options, expected, args.timeout)
    result["rss_mib"], result["rss_before_mib"] = _peak_rss_mib(), rss_before
    lines = sum(len(v) for v in archive.read_archive(archive_path, args.archive_format).values())
    files = len(archive.archive_files(archive_path, args.archive_format))
    shutil.rmtree(archive_path, ignore_errors=True)
    if lines != expected:
        raise SystemExit(f"archive check FAILED: {lines} lines in {files} files, expected {expected}")
    print("-> conversion core (DecodeToRecords + WriteArchiveFiles, no Beam, one core)", flush=True)
    core = expected / conversion_core(bodies, work / "core", archive_format=args.archive_format)
    print(f"   {core:>12,.0f} samples/s", flush=True)
    if args.profile:
        profiler = cProfile.Profile()
        conversion_core(bodies, work / "profile", profiler, args.archive_format)
        print(f"\nprofile of the conversion core over {args.messages} messages (top 15 by cumulative time):")
        pstats.Stats(profiler).strip_dirs().sort_stats("cumulative").print_stats(15)
    return {"shape": shape, "kib": size_kib, "raw": raw, "core": core, "lines": lines, "files": files,
            "expected": expected, **result}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200, help="1000-series requests in the backlog (default 200)")
    parser.add_argument("--shapes", default="small,node",
                        help="message sizes to run, comma-separated: small (~12 KiB: 6 short labels) and node "
                             "(~44 KiB: 10 node_exporter-like labels) (default both)")
    parser.add_argument("--window_size", type=int, default=5, help="pipeline --window_size seconds (default 5)")
    parser.add_argument("--max_batch_samples", type=int, default=2_000_000,
                        help="pipeline --max_batch_samples (default 2000000, the pipeline's default)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the pipeline (default 600)")
    parser.add_argument("--profile", action="store_true", help="also cProfile the conversion core over the bodies")
    parser.add_argument("--archive_format", default="ndjson", choices=sorted(FORMATS),
                        help="the pipeline's --archive_format (default ndjson)")
    args, beam_args = parser.parse_known_args()
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = set(shapes) - set(SHAPES)
    if unknown:
        parser.error(f"unknown --shapes {sorted(unknown)}: use {sorted(SHAPES)}")

    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    emulator, host = services.start_pubsub_emulator(work)
    try:
        results = [bench_shape(shape, args, beam_args, host, work) for shape in shapes]
    finally:
        emulator.stop()
    for r in results:
        rate = r["samples_per_second"]
        print(f"\nsamples/s, {r['shape']} messages ({args.messages} x {SERIES_PER_REQUEST} series, "
              f"{r['kib']:.1f} KiB each; same bodies, same run):")
        print(f"  {'pipeline':<18} {rate:>12,.0f}   Pub/Sub backlog -> finalised archive, "
              f"{r['seconds']:.1f}s wall, {len(r['runs'])} runs, {r['busy']:.1f}s in Beam runs")
        print(f"  {'pipeline, per CPU s':<18} {r['samples_per_cpu_second']:>12,.0f}   "
              "samples per CPU second of this process (all its threads) over the same run")
        print(f"  {'raw decode':<18} {r['raw']:>12,.0f}   snappy + protobuf parse only, one core")
        print(f"  {'conversion core':<18} {r['core']:>12,.0f}   "
              f"decode + validate + {args.archive_format} blocks + files, no Beam")
        print(f"  pipeline/raw decode = {rate / r['raw']:.3f}   (goal >= 0.25)")
        print(f"  peak RSS           {r['rss_mib']:>9,.0f} MiB   of this process after the pipeline "
              f"({r['rss_before_mib']:,.0f} MiB before it), largest bounded run "
              f"{max(run['samples'] for run in r['runs']):,} samples")
        print(f"  archive check: {r['lines']:,} lines in {r['files']} files == {r['expected']:,} samples: ok")
    print(f"(service logs in {work})")


if __name__ == "__main__":
    main()
