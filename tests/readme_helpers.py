"""The README's and docs' code blocks, and the small archive they run against (both formats, one Beam writer)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions

from transforms.beam import ArchiveMessages
from transforms.core.protocol import STALE_NAN, Protocol
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
T0 = 1_795_597_200_000  # 2026-11-25T09:00:00Z
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    info: str  # the fence's info string: "sh", "sh manual", "sql", ...
    text: str
    line: int  # where the block starts in its file, for failure messages
    marker: str | None  # the <!-- name --> comment right before the fence, if any


def code_blocks(path: Path = README) -> list[Block]:
    text = path.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip()
        marker = re.search(r"<!-- ([\w-]+) -->$", before)
        blocks.append(Block(match.group(1).strip(), match.group(2), before.count("\n") + 2,
                            marker.group(1) if marker else None))
    return blocks


def marked_query(marker: str) -> str:
    """The SQL block under `<!-- marker -->`, from the README or a docs/ page: exactly one may carry it."""
    found = [b.text for path in (README, *sorted((ROOT / "docs").glob("*.md"))) for b in code_blocks(path)
             if b.marker == marker]
    assert len(found) == 1, f"<!-- {marker} --> marks {len(found)} code blocks in README.md and docs/"
    return found[0]


def write_test_archive(archive: Path) -> None:
    """Two tenants, two hours, a counter with metadata and a stale marker; NDJSON and Parquet side by side."""
    requests = [
        (build_v1([Series({"__name__": "http_requests_total", "job": "api"}, [(T0, 5.0), (T0 + 1000, STALE_NAN)])],
                  metadata=[Series({"__name__": "http_requests_total"}, metric_type="counter",
                                   help="Requests served.", unit="requests")]), "default"),
        (build_v1([Series({"__name__": "up", "job": "node"}, [(T0 - 3_600_000, 1.0)])]), "default"),
        (build_v1([Series({"__name__": "up", "job": "other"}, [(T0, 1.0)])]), "team-b"),
    ]
    messages = [PubsubMessage(codec.encode(m), codec.message_attributes(Protocol.V1, t, "x", codec.count(m)),
                              message_id=str(i)) for i, (m, t) in enumerate(requests)]
    for archive_format in ("ndjson", "parquet"):
        with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
            _ = (p | beam.Create(messages) | ArchiveMessages(str(archive), str(archive / "_dead_letters"),
                                                             file_label=lambda window, pane: "readme",
                                                             archive_format=archive_format))
