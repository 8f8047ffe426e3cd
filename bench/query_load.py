"""Loading the same remote-write bodies into each backend of `make bench-query`.

- Prometheus 2.42: remote-written into a Prometheus with the receiver on, then a TSDB snapshot (the head
  written out as a persisted block, stale markers included) that the measured Prometheus opens.
- VictoriaMetrics: remote-written, then flushed.
- The archive: written as the pipeline writes it (transforms/beam/archive.py, DecodeToRecords and
  WriteArchiveFiles without Beam around them): each body decoded by the compiled decoder into the Parquet
  format's blocks, one file per pipeline window (by sample time, as a live pipeline's windows hold the
  scrapes of their time) and hour partition, written atomically. A copy is then compacted by the real job,
  `python -m pipeline.compact`.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import requests

from pipeline.local_loop import run_label
from tools import services
from transforms.core.archive.format import FORMATS, partition_parts
from transforms.core.archive.lines import PackedBlock
from transforms.core.archive.metric_to_log import Partition
from transforms.core.metadata import MetadataStore
from transforms.core.protocol import DEFAULT_TENANT, MAX_DECOMPRESSED, Protocol
from transforms.core.wire import codec
from transforms.core.wire.validation import NameValidation
from transforms.io.files import write_atomically

HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
           "X-Prometheus-Remote-Write-Version": "0.1.0"}
Bodies = Sequence[tuple[int, bytes]]


def remote_write(url: str, bodies: Bodies) -> None:
    with requests.Session() as session:
        for _, body in bodies:
            answer = session.post(url, data=body, headers=HEADERS, timeout=120)
            if answer.status_code not in (200, 204):
                raise RuntimeError(f"{url} answered {answer.status_code}: {answer.text[:500]}")


def prometheus_block(log_dir: Path, bodies: Bodies) -> Path:
    """A TSDB directory holding the bodies as one persisted block (written by Prometheus itself)."""
    loader, url = services.start_prometheus(log_dir, "global: {scrape_interval: 1m}\n", receiver=True,
                                            name="prometheus-loader", args=["--web.enable-admin-api"])
    try:
        remote_write(f"{url}/api/v1/write", bodies)
        answer = requests.post(f"{url}/api/v1/admin/tsdb/snapshot", timeout=600).json()
        data_dir = next(a for a in loader.process.args if a.startswith("--storage.tsdb.path=")).split("=", 1)[1]
        snapshot = Path(data_dir) / "snapshots" / answer["data"]["name"]
    finally:
        loader.stop()
    tsdb = log_dir / "prometheus-tsdb"
    snapshot.rename(tsdb)
    if not any(tsdb.iterdir()):
        raise RuntimeError("the Prometheus snapshot holds no block")
    return tsdb


def vm_rows(url: str) -> int:
    _, body = services.http_get(f"{url}/metrics", timeout=10)
    return int(sum(float(v) for v in re.findall(r"^vm_rows_inserted_total\{[^}]*\} (\S+)$", body.decode(), re.M)))


def load_victoria_metrics(url: str, bodies: Bodies, samples: int) -> None:
    remote_write(f"{url}/api/v1/write", bodies)
    services.wait_until(lambda: vm_rows(url) >= samples, 300, f"VictoriaMetrics to insert {samples} rows",
                        interval=0.2)
    requests.get(f"{url}/internal/force_flush", timeout=120).raise_for_status()


def write_archive(root: Path, bodies: Bodies, types: dict[str, str], window_s: int) -> int:
    """The bodies as the pipeline archives them in Parquet, one file per window and hour. Returns the files."""
    fmt = FORMATS["parquet"]
    store = MetadataStore()
    store.update(DEFAULT_TENANT, types)  # what the pipeline learns from Prometheus' metadata messages
    converter = fmt.converter(store)
    windows: dict[int, list[tuple[int, bytes]]] = collections.defaultdict(list)
    for stamp, body in bodies:
        windows[stamp // (window_s * 1000)].append((stamp, body))
    files = 0
    for window, items in sorted(windows.items()):
        blocks: dict[Partition, list[PackedBlock]] = collections.defaultdict(list)
        for _, body in items:
            decoded = codec.decode(body, Protocol.V1, MAX_DECOMPRESSED, NameValidation.UTF8,
                                   table=converter.table(DEFAULT_TENANT))
            for partition, block in fmt.convert(converter, decoded.batch, DEFAULT_TENANT).items():
                blocks[partition].append(block)
        label = run_label(window * window_s, [str(stamp) for stamp, _ in items])
        for partition, packed in blocks.items():
            chunks, compression = fmt.file_chunks(packed)
            path = root.joinpath(*partition_parts(partition), fmt.file_name(label, 0))
            write_atomically(str(path), str(root / ".tmp"), chunks, compression)
            files += 1
    return files


def compacted_copy(source: Path, target: Path, before_ms: int, log_dir: Path) -> str:
    """A copy of the archive, compacted by `python -m pipeline.compact`; returns its summary line."""
    shutil.copytree(source, target)
    done = subprocess.run([sys.executable, "-m", "pipeline.compact", f"--archive_path={target}",
                           f"--before={before_ms // 1000}"], capture_output=True, text=True, timeout=1800,
                          cwd=services.ROOT)
    (log_dir / "compact.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"pipeline.compact failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
