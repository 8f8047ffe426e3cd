"""Thin Beam wrappers (DoFns and PTransforms) around the pure core and the I/O edges.

Used by both graphs in pipeline/: the local loop of bounded runs and the streaming job on Dataflow.
"""

from transforms.beam.archive import ArchiveMessages
from transforms.beam.sinks import ForwardToSink

__all__ = ["ArchiveMessages", "ForwardToSink"]
