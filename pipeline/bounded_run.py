"""The local loop's bounded Beam run over one window's messages, with its graph built once.

Every window runs the same graph: read the batch, archive it. Only the batch and the files' label
change. Building that graph and translating it to the Runner API costs more CPU than a window of a
few dozen messages does (~60 % of a run's ~0.22 s fixed cost, by cProfile). So the graph reads both
from files in a run directory that the loop owns, is built and translated on the first run, and the
same Runner API proto goes to the local runner for every later window. Its DoFns are unpickled
afresh per run, as before, so no state leaks between runs except through the `Shared` metadata store.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.utils.shared import Shared

from pipeline.options import ArchiveOptions, dead_letter_path
from transforms.beam import ArchiveMessages

BATCH_FILE = "batch.pickle"
LABEL_FILE = "label"


def read_batch_file(path: str) -> list[PubsubMessage]:
    with open(path, "rb") as handle:
        return [PubsubMessage(data, attributes, message_id=message_id, publish_time=publish_time)
                for data, attributes, message_id, publish_time in pickle.load(handle)]


class RunLabel:
    """`file_label(window, pane)` of the current run: read from the run directory, since the graph that
    holds this object is built once and the label changes with every run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, window: Any, pane: Any) -> str:
        with open(self.path, encoding="ascii") as handle:
            return handle.read()


class _KeepsTranslatedGraph(FnApiRunner):
    """The local batch runner, keeping the Runner API proto of the first pipeline it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.graph: beam_runner_api_pb2.Pipeline | None = None

    def run_via_runner_api(self, pipeline_proto: beam_runner_api_pb2.Pipeline, options: PipelineOptions) -> Any:
        if self.graph is None:
            self.graph = pipeline_proto
        return super().run_via_runner_api(pipeline_proto, options)


class BoundedArchiveRun:
    """Runs the archive graph over one batch of messages at a time; `close()` removes the run directory."""

    def __init__(self, options: PipelineOptions, metadata: Shared) -> None:
        self.options = options  # batch mode, a local runner (the loop's choice)
        self.archive = options.view_as(ArchiveOptions)
        self.metadata = metadata
        self.directory = tempfile.mkdtemp(prefix="archive-run-")
        self.runner: _KeepsTranslatedGraph | None = None

    def _build(self) -> beam.Pipeline:
        p = beam.Pipeline(runner=self.runner, options=self.options)
        # The batch reaches the run through a local file: beam.Create would pickle it into the
        # pipeline with bz2, which costs more than archiving it.
        _ = (p
             | "Batch" >> beam.Create([os.path.join(self.directory, BATCH_FILE)])
             | "Messages" >> beam.FlatMap(read_batch_file)
             | "Archive" >> ArchiveMessages(self.archive.archive_path, dead_letter_path(self.archive),
                                            file_label=RunLabel(os.path.join(self.directory, LABEL_FILE)),
                                            max_lines_per_file=self.archive.max_lines_per_file,
                                            archive_format=self.archive.archive_format,
                                            metadata=self.metadata))
        return p

    def run(self, label: str, messages: Sequence[Any]) -> dict[str, int]:
        """Archives `messages` into files labelled `label`; returns the run's archive counters once every
        file is finalised."""
        with open(os.path.join(self.directory, BATCH_FILE), "wb") as handle:
            pickle.dump([(m.data, m.attributes, m.message_id, m.publish_time) for m in messages], handle,
                        protocol=pickle.HIGHEST_PROTOCOL)
        with open(os.path.join(self.directory, LABEL_FILE), "w", encoding="ascii") as handle:
            handle.write(label)
        try:
            if self.runner is None or self.runner.graph is None:
                self.runner = _KeepsTranslatedGraph()
                result = self._build().run()
            else:
                result = self.runner.run_via_runner_api(self.runner.graph, self.options)
            result.wait_until_finish()
        except Exception:
            self.runner = None  # rebuilt by the next run: nothing of a failed run is reused
            raise
        finally:
            os.unlink(os.path.join(self.directory, BATCH_FILE))
        counters = result.metrics().query(MetricsFilter().with_namespace("archive"))["counters"]
        return {c.key.metric.name: c.committed or c.attempted or 0 for c in counters}

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
