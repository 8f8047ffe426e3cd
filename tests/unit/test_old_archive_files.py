"""Window files written by an earlier version (commit d7e7fc7: one dictionary per Parquet file, 1 M-row groups,
blocks packed differently) read, and restore, exactly as the same requests written by this version.

tests/fixtures/archive_d7e7fc7/ holds the files `window_files` below wrote, run from a checkout of d7e7fc7
(a request with every special value, a native histogram and an exemplar, and 200 node_exporter-like series).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.archive_samples import T0, sample_request
from transforms.core.archive.format import archive_format
from transforms.core.metadata import MetadataStore
from transforms.core.protocol import Protocol
from transforms.core.restore.selection import Selection, to_request
from transforms.core.wire.batch import SeriesTable, decode
from transforms.core.wire.builders import Series, build_v1

OLD = Path(__file__).parent.parent / "fixtures" / "archive_d7e7fc7"


def window_files() -> dict[str, bytes]:
    """One window file per format, through the pipeline's own path (decode -> convert -> file_chunks)."""
    node = build_v1([Series({"__name__": "node_cpu_seconds_total", "cpu": str(c), "mode": m,
                             "instance": "n1:9100", "job": "node"},
                            [(T0 + 15_000 * k, 1000.5 * c + k) for k in range(4)])
                     for c in range(50) for m in ("idle", "user", "system", "iowait")])
    requests = [sample_request().SerializeToString(), node.SerializeToString()]
    files = {}
    for name in ("ndjson", "parquet"):
        fmt = archive_format(name)
        converter = fmt.converter(MetadataStore())
        table = SeriesTable()
        blocks = []
        for payload in requests:
            (block,) = fmt.convert(converter, decode(payload, Protocol.V1, table), "default").values()
            blocks.append(block)
        chunks, _ = fmt.file_chunks(blocks)
        files[name] = b"".join(chunks)
    return files


def canonical(records: list[dict]) -> list[str]:  # NaN != NaN: compare the encoded text, which carries the bits
    return sorted(json.dumps(r, sort_keys=True, default=str).replace("NaN", "nan") for r in records)


@pytest.mark.parametrize("name", ["ndjson", "parquet"])
def test_an_old_window_file_reads_and_restores_as_a_new_one(name: str) -> None:
    fmt = archive_format(name)
    old = (OLD / f"window{fmt.suffix}").read_bytes()
    new = window_files()[name]
    assert len(fmt.read(new)) == 10 + 800  # the sample request's records, and the node series' samples
    assert canonical(fmt.read(old)) == canonical(fmt.read(new))
    restored_old, restored_new = (to_request(fmt.points(stored), Selection()) for stored in (old, new))
    assert restored_old.request == restored_new.request
    assert restored_old.samples == restored_new.samples > 800
