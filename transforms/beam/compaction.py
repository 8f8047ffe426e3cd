"""Beam wrapper of the compaction job: partition folders -> each compacted (transforms/io/compaction.py).

One element per tenant=/date=/hour= partition, spread over workers by a reshuffle; a partition is the unit
of work because the protocol's marker, outputs and deletions all live in its folder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.core.archive.compaction import CompactionError
from transforms.core.archive.records import RecordError
from transforms.io.compaction import PartitionResult, compact_partition

__all__ = ["CompactPartitions", "NAMESPACE"]

log = logging.getLogger(__name__)
NAMESPACE = "compaction"
COUNTED = ("inputs", "outputs", "rows", "bytes_in", "bytes_out", "finished", "undone")


class _CompactPartition(beam.DoFn):
    def __init__(self) -> None:
        self.counters = {name: Metrics.counter(NAMESPACE, name) for name in (*COUNTED, "partitions",
                                                                              "partitions_failed")}

    def process(self, partition: str) -> Iterator[PartitionResult]:
        try:
            result = compact_partition(partition)
        except (RecordError, CompactionError) as exc:  # a foreign or corrupt file: name it, leave the partition
            log.error("compaction: partition %s left as it is: %s", partition, exc)
            self.counters["partitions_failed"].inc()
            return
        self.counters["partitions"].inc()
        for name in COUNTED:
            self.counters[name].inc(getattr(result, name))
        yield result


class CompactPartitions(beam.PTransform):
    """Partition folders -> PartitionResult per partition (partitions that failed are logged and counted)."""

    def expand(self, partitions: beam.PCollection[str]) -> beam.PCollection[PartitionResult]:
        return partitions | "Spread" >> beam.Reshuffle() | "Compact" >> beam.ParDo(_CompactPartition())
