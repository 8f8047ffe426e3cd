"""Prometheus remote-write pipeline: receiver (Flask/gunicorn -> Pub/Sub) and Beam pipeline."""

from setuptools import Extension, find_packages, setup

# Beam is pinned here and in templates/ (the Flex Template image); a test keeps them equal.
BEAM_VERSION = "2.77.0"

# The compiled wire module's sources (C, CPython API only), one file per job; see transforms/core/wire/_wire.h.
WIRE_DIR = "transforms/core/wire"
WIRE_PARTS = ("", "_scan", "_decode", "_decode_v1", "_decode_v2", "_decode_common", "_series", "_columns", "_lines",
              "_encode", "_parse_lines", "_xor")
# Warnings are errors in the project's own C; only PyInit__wire is exported (hidden visibility, see _wire.h).
WIRE_CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-std=c11", "-fvisibility=hidden"]

setup(
    name="prometheus-remote-write-pipeline",
    version="0.1.0",
    description="Keep every Prometheus remote-write sample: archive to object storage, forward to stores.",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["receiver", "receiver.*", "reader", "reader.*", "pipeline", "pipeline.*",
                                    "transforms", "transforms.*"]),
    package_data={"transforms.core.wire.proto": ["*.proto", "*.pyi"]},
    # The one compiled wire-format module (C, CPython API only); `pip install -e .` builds it in place.
    ext_modules=[Extension("transforms.core.wire._wire",
                           sources=[f"{WIRE_DIR}/_wire{part}.c" for part in WIRE_PARTS],
                           depends=[f"{WIRE_DIR}/_wire.h", f"{WIRE_DIR}/_wire_decode.h"],
                           extra_compile_args=WIRE_CFLAGS)],
    install_requires=[
        f"apache-beam[gcp,aws]=={BEAM_VERSION}",
        "protobuf==6.33.6",
        "python-snappy==0.7.3",
        "flask==3.1.3",
        "gunicorn==27.0.1",
        "httptools==0.9.0",  # the receiver worker's HTTP/1.1 parser (llhttp, C), as uvicorn uses
        "google-cloud-pubsub==2.44.0",
        "google-cloud-storage==3.17.1",
        "prometheus-client==0.26.0",
        "isal==1.9.1",  # gzip (ISA-L) for the ndjson archive: ~10x zlib's speed; measured against zlib-ng
        "pyarrow==25.0.1",  # the Parquet archive format (also in requirements/constraints.txt)
        "promql-parser==0.11.0",  # the restore job's --match selectors (PromQL's own grammar)
        "tqdm==4.70.1",  # the restore job's progress bar on a terminal
        "numpy==2.4.6",  # the sinks' columns (sort, merge, route); already a dependency of Beam and pyarrow
        "google-re2==1.1.20251105",  # the reader's regex matchers: RE2, as Prometheus (Go) uses; linear time
        "google-crc32c==1.9.0",  # the reader's streamed frames (CRC32-Castagnoli, in C); already a GCS dependency
    ],
    extras_require={
        "test": [
            "pytest==9.2.0",
            "hypothesis==6.170.17",  # property tests: the wire pre-scan against upb, on random and mutated bytes
            "ruff==0.17.6",
            "grpcio-tools==1.81.1",  # protoc, to regenerate and check transforms/core/wire/proto
            "requests==2.34.2",
            "gcp-storage-emulator==2026.7.19",  # GCS emulator for archive tests
            "moto[server]==5.2.5",  # S3 server for archive tests
            "duckdb==2.0.1",  # runs the README's query example against a test archive
            "py-spy==0.4.3",  # bench.cpu --profile: sampling profiles of the measured processes
        ],
    },
    entry_points={"console_scripts": ["remote-write-receiver=receiver.__main__:main",
                                      "remote-read-archive=reader.__main__:main"]},
)
