"""The sink driver's side of order-safe delivery (`order: strict`): redeliveries told apart from real losses.

A strict sink (Prometheus without `out_of_order_time_window`, Mimir by default) refuses a sample older
than the newest it holds for its series, with a 400 for the whole request. Pub/Sub redelivers, so a
series' older request can come back after a newer one. With the sink's record of what it accepted
(transforms/core/sink/delivered.py), the driver (transforms/io/sink_driver.py, through the hooks
`unsent`, `sending`, `accepted` and `refused`):

- drops samples the sink already accepted before sending them, and counts them as already delivered;
- on a refusal for order, splits by series (never into single samples) and, for one series, sends
  again what is newer than the newest delivered sample, counts what a killed run sent unanswered as
  already delivered, and dead-letters the rest with a reason that says whether it was surely never
  delivered (a real loss) or is older than what the record remembers (maybe already delivered).

A series the record knows nothing about is split like any other refusal: nothing tells its delivered
samples from its lost ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import numpy as np

from transforms.core.sink.batching import SeriesRequest, TimeSeries
from transforms.core.sink.columns import ColumnRequest, Columns
from transforms.core.sink.delivered import DeliveredLog, series_runs
from transforms.core.wire.convert import series_key
from transforms.core.wire.proto import remote_v1_pb2

log = logging.getLogger(__name__)
ORDER_MODES = ("any", "strict")  # the sinks file's `order`; transforms/core/sink/config.py validates it

Request = ColumnRequest | SeriesRequest
Metadata = list[remote_v1_pb2.MetricMetadata]
Deliver = Callable[[str, Request, Metadata | None], list[str]]
# Dead-letter a request with this reason (the driver adds the sink's status and answer).
GiveUp = Callable[[Request, Metadata, str], list[str]]


class Counts(Protocol):
    def add(self, **increments: int) -> None: ...


def _part(request: ColumnRequest, cols: Columns) -> ColumnRequest:
    return ColumnRequest(request.sink_series, cols, 0, len(cols))


class OrderGuard:
    """One sink's record of what it accepted, and what the driver does with it."""

    def __init__(self, sink_name: str, stats: Counts, delivered: DeliveredLog) -> None:
        self.sink_name = sink_name
        self.stats = stats
        self.delivered = delivered

    # -- before sending ---------------------------------------------------------------------
    def unsent(self, tenant: str, request: Request) -> Request | None:
        """The request without samples the sink already accepted (a redelivery); None if nothing is left."""
        if isinstance(request, SeriesRequest):
            return self._series_unsent(tenant, request)
        cols = request.cols
        part = cols.take(slice(request.lo, request.hi))
        known = self.delivered.already_delivered(tenant, request.sink_series.keys, part.series, part.timestamps)
        count = int(known.sum())
        if not count:
            return request
        self._already(count, len(part))
        return None if count == len(part) else _part(request, part.take(~known))

    def _series_unsent(self, tenant: str, request: SeriesRequest) -> SeriesRequest | None:
        """The protobuf path's request (histograms, exemplars) without points the sink already accepted."""
        kept: list[TimeSeries] = []
        count = 0
        for series in request.series:
            known = self.delivered.timestamps(tenant, series_key(series))
            if not len(known):
                kept.append(series)
                continue
            stamps = set(known.tolist())
            samples = [s for s in series.samples if s.timestamp not in stamps]
            histograms = [h for h in series.histograms if h.timestamp not in stamps]
            dropped = len(series.samples) + len(series.histograms) - len(samples) - len(histograms)
            if not dropped:
                kept.append(series)
                continue
            count += dropped
            if samples or histograms:
                out = TimeSeries(labels=series.labels)
                out.samples.extend(samples)
                out.histograms.extend(histograms)
                out.exemplars.extend(e for e in series.exemplars if e.timestamp not in stamps)
                kept.append(out)
        if not count:
            return request
        self._already(count, request.points)
        return SeriesRequest(kept) if kept else None

    def _already(self, count: int, of: int) -> None:
        self.stats.add(samples_already_delivered=count)
        log.info("sink %s: %d of %d samples already delivered (a redelivery): not sent again", self.sink_name,
                 count, of)

    def sending(self, tenant: str, request: Request) -> None:
        """Before each POST: what the sink may write even if this process dies before the answer."""
        if self.delivered.sending is None:
            return
        if isinstance(request, ColumnRequest):
            cols = request.cols
            self.delivered.about_to_send(tenant, request.sink_series.keys, cols.series[request.lo:request.hi],
                                         cols.timestamps[request.lo:request.hi])
            return
        for series in request.series:
            stamps = sorted([s.timestamp for s in series.samples] + [h.timestamp for h in series.histograms])
            if stamps:
                self.delivered.about_to_send(tenant, [series_key(series)], np.zeros(len(stamps), np.uint32),
                                             np.asarray(stamps, np.int64))

    # -- the sink's answer ------------------------------------------------------------------
    def accepted(self, tenant: str, request: Request) -> None:
        """The sink answered 2xx: remember every timestamp of the request."""
        if isinstance(request, ColumnRequest):
            cols = request.cols
            self.delivered.record(tenant, request.sink_series.keys, cols.series[request.lo:request.hi],
                                  cols.timestamps[request.lo:request.hi])
            return
        for series in request.series:
            stamps = [s.timestamp for s in series.samples] + [h.timestamp for h in series.histograms]
            self.delivered.record_series(tenant, series_key(series), stamps)

    def refused(self, tenant: str, request: Request, metadata: Metadata, deliver: Deliver,
                give_up: GiveUp) -> list[str] | None:
        """A request refused for its samples' order: dead-letter records once handled here, or None to have
        the driver halve it as any refusal (several series: each half comes back here; a series the
        record does not know; the protobuf path)."""
        if not isinstance(request, ColumnRequest):
            return None
        cols = request.cols
        part = cols.take(slice(request.lo, request.hi))
        if len(series_runs(part.series)) > 1:
            return None
        keys = request.sink_series.keys
        key = keys[int(part.series[0])]
        known = self.delivered.already_delivered(tenant, keys, part.series, part.timestamps)
        if known.any():  # delivered by another flush meanwhile: drop those and try the rest
            self._already(int(known.sum()), len(part))
            rest = part.take(~known)
            return deliver(tenant, _part(request, rest), metadata) if len(rest) else []
        unconfirmed = self.delivered.sent_unconfirmed(tenant, keys, part.series, part.timestamps)
        if unconfirmed.any():  # sent by a run killed before the answer, refused for order now: the sink has them
            count = int(unconfirmed.sum())
            self.stats.add(samples_already_delivered=count)
            log.info("sink %s: %d samples sent by a previous run that died before the answer are refused as out of "
                     "order: the sink holds them (already delivered)", self.sink_name, count)
            rest = part.take(~unconfirmed)
            return deliver(tenant, _part(request, rest), metadata) if len(rest) else []
        newest = self.delivered.newest_sent(tenant, key)
        if newest is None:
            return None
        older = part.timestamps < newest
        if not older.any():
            return give_up(request, metadata, f"newer than the newest sample delivered for its series ({newest} ms), "
                                              "yet refused: the sink holds newer samples from elsewhere")
        if not older.all():  # the older ones alone (refused again, then told apart below), then the newer ones
            return (deliver(tenant, _part(request, part.take(older)), metadata)
                    + deliver(tenant, _part(request, part.take(~older)), None))
        floor = self.delivered.floor(tenant, key)
        unknown = np.ones(len(part), bool) if floor is None else part.timestamps < floor
        dead: list[str] = []
        if unknown.any():
            since = "nothing" if floor is None else f"every delivery from {floor} ms"
            dead += give_up(_part(request, part.take(unknown)), metadata,
                            f"older than the newest sample delivered for its series ({newest} ms) and than what is "
                            f"remembered for it ({since}): maybe already delivered, maybe a loss; replaying is "
                            "harmless")
            metadata = []
        if not unknown.all():
            dead += give_up(_part(request, part.take(~unknown)), metadata,
                            f"never delivered, and older than the newest sample delivered for its series ({newest} "
                            "ms): a real loss unless replayed into a sink with an out-of-order window")
        return dead
