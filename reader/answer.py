"""Answering one read request, free of Flask: run each query over the archive and encode the response."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from reader.metrics import ReaderMetrics
from transforms.core.errors import RemoteWriteError
from transforms.core.read.encode import chunked_frames, query_result_bytes, read_response_bytes
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
    body: bytes | Iterator[bytes]  # an iterator: frames written to the client one by one (chunked)
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
        """Each query is read and encoded before the next is read, and every query before the first byte is
        sent, so that a limit is still a 4xx; a request holds at most --max-bytes-per-response of encoded
        answer plus one query's selected samples (24 bytes each, at most --max-samples-per-query)."""
        stats = ReadStats()
        parts: list[bytes] = []
        size = 0
        try:
            for index in range(len(plan.queries)):
                series = self._series(tenant, index, plan, stats)
                self.metrics.queries.inc()
                encoded = [query_result_bytes(series)] if plan.response_type == SAMPLES else \
                    chunked_frames(index, series)
                for part in encoded:
                    size += len(part)
                    self._check_size(size)
                    parts.append(part)
                del series
        finally:
            self.metrics.files.inc(stats.files)
            self.metrics.rows.inc(stats.rows)
            self.metrics.bytes_read.inc(stats.bytes)
        if plan.response_type == SAMPLES:
            body = read_response_bytes(parts)
            self.metrics.response_bytes.inc(len(body))
            return Answer(snappy_block.compress(body), CONTENT_TYPE_SAMPLES, "snappy")
        self.metrics.response_bytes.inc(size)
        return Answer(self._stream(parts), CONTENT_TYPE_STREAMED, None)

    @staticmethod
    def _stream(frames: list[bytes]) -> Iterator[bytes]:
        """The frames, written to the client one by one (a chunked HTTP/1.1 body), each let go once written."""
        for index in range(len(frames)):
            frame, frames[index] = frames[index], b""
            yield frame
