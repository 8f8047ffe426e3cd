"""Answering one read request, free of Flask: run each query over the archive and encode the response."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from reader.metrics import ReaderMetrics
from transforms.core.errors import RemoteWriteError
from transforms.core.read.encode import chunked_bytes_bound, chunked_frames, query_result_bytes, read_response_bytes
from transforms.core.read.request import (
    CONTENT_TYPE_SAMPLES,
    CONTENT_TYPE_STREAMED,
    SAMPLES,
    LimitExceeded,
    ReadPlan,
)
from transforms.core.read.select import Series
from transforms.core.wire import snappy_block
from transforms.io.archive_read import ArchiveReader, ArchiveUnreadable, NativeHistograms, ReadStats, SampleLimit


class ArchiveError(RemoteWriteError):
    """The archive could not be read (500: the data, not the request, is at fault)."""

    status = 500


class NotServed(RemoteWriteError):
    """The query selects data the reader cannot return faithfully (native histograms): 422, not retried."""

    status = 422


@dataclasses.dataclass
class Answer:
    body: bytes | Iterator[bytes]  # an iterator: frames written to the client as they are encoded
    content_type: str
    content_encoding: str | None


class Answerer:
    def __init__(self, archive: ArchiveReader, max_samples_per_query: int, max_bytes_per_response: int,
                 metrics: ReaderMetrics) -> None:
        self.archive = archive
        self.max_samples = max_samples_per_query
        self.max_bytes = max_bytes_per_response
        self.metrics = metrics

    def _series(self, tenant: str, index: int, plan: ReadPlan, stats: ReadStats) -> list[Series]:
        query = plan.queries[index]
        try:
            series = self.archive.read(tenant, query.start_ms, query.end_ms, query.matchers, self.max_samples, stats)
        except SampleLimit as exc:
            raise LimitExceeded(f"query {index} ({', '.join(map(str, query.matchers))}) selects more than "
                                f"{self.max_samples} samples (--max-samples-per-query); narrow its matchers or "
                                f"time range") from exc
        except NativeHistograms as exc:
            raise NotServed(f"query {index} ({', '.join(map(str, query.matchers))}) selects {exc.series} series "
                            f"holding native histograms (e.g. {exc.example}), which this reader does not serve "
                            f"yet; exclude them with a matcher on __name__") from exc
        except ArchiveUnreadable as exc:
            raise ArchiveError(f"query {index}: {exc}") from exc
        self.metrics.samples.inc(sum(len(s.timestamps) for s in series))
        return series

    def _check_size(self, size: int) -> None:
        if size > self.max_bytes:
            raise LimitExceeded(f"the response would exceed {self.max_bytes} bytes (--max-bytes-per-response); "
                                f"narrow the query's matchers or time range")

    def answer(self, tenant: str, plan: ReadPlan) -> Answer:
        """Every query is read before the first byte is sent, so that a limit is still a 4xx (the selected
        samples, 24 bytes each, are what a request holds: at most --max-samples-per-query per query)."""
        stats = ReadStats()
        try:
            selected = []
            for index in range(len(plan.queries)):
                selected.append(self._series(tenant, index, plan, stats))
                self.metrics.queries.inc()
        finally:
            self.metrics.files.inc(stats.files)
            self.metrics.rows.inc(stats.rows)
            self.metrics.bytes_read.inc(stats.bytes)
        if plan.response_type == SAMPLES:
            return self._samples(selected)
        if sum(chunked_bytes_bound(series) for series in selected) <= self.max_bytes:
            return Answer(self._stream(selected), CONTENT_TYPE_STREAMED, None)
        # the bound allows more than the limit (it is ~8x the usual size): encode whole, to answer 422 if over
        return Answer(b"".join(self._frames(selected, check=True)), CONTENT_TYPE_STREAMED, None)

    def _samples(self, selected: list[list[Series]]) -> Answer:
        parts: list[bytes] = []
        size = 0
        for series in selected:
            parts.append(query_result_bytes(series))
            size += len(parts[-1])
            self._check_size(size)
        body = read_response_bytes(parts)
        self.metrics.response_bytes.inc(len(body))
        return Answer(snappy_block.compress(body), CONTENT_TYPE_SAMPLES, "snappy")

    def _frames(self, selected: list[list[Series]], check: bool) -> Iterator[bytes]:
        """The frames of every query in order; each query's series are let go as they are encoded."""
        size = 0
        for index in range(len(selected)):
            series, selected[index] = selected[index], []
            for frame in chunked_frames(index, series):
                size += len(frame)
                if check:
                    self._check_size(size)
                yield frame
        self.metrics.response_bytes.inc(size)

    def _stream(self, selected: list[list[Series]]) -> Iterator[bytes]:
        """Frames as they are encoded (memory: the selected samples, shrinking, and one frame), within the limit
        by chunked_bytes_bound. An error now can only cut the stream short: the HTTP/1.1 chunked body then
        lacks its last chunk, which clients (Prometheus' too) report as an error, never as a short answer."""
        yield from self._frames(selected, check=False)
