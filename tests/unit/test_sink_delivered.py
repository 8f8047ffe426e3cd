"""Order-safe delivery: the delivered-timestamps log (pure) and the forwarder against a strict sink model."""

from __future__ import annotations

import base64
import json
import threading

import numpy as np
import pytest

from transforms.core.retry import Attempt, classify
from transforms.core.sink import config
from transforms.core.sink.delivered import DeliveredLog, refused_for_order, series_runs
from transforms.core.wire import codec
from transforms.core.wire.builders import Series, build_v1
from transforms.core.wire.convert import series_key
from transforms.io.delivered_state import DeliveredState
from transforms.io.sink_driver import Forwarder

URL = "http://127.0.0.1:9/api/v1/write"
BASE = 1_700_000_000_000


class StrictSink:
    """Prometheus without an out-of-order window, as a model: one sample older than the newest held for its
    series (or at the same timestamp with another value) refuses the whole request with 400."""

    def __init__(self) -> None:
        self.held: dict[tuple, dict[int, float]] = {}
        self.posts = 0
        self.lock = threading.Lock()

    def post(self, body: bytes, headers: dict[str, str], points: int = 0) -> Attempt:
        request = codec.decode(body, codec.protocol_for_content_type(headers["Content-Type"]), 1 << 24).message
        with self.lock:
            self.posts += 1
            for s in request.timeseries:
                held = self.held.get(tuple((lab.name, lab.value) for lab in s.labels), {})
                newest = max(held, default=None)
                for sample in s.samples:
                    if newest is not None and (sample.timestamp < newest or (
                            sample.timestamp == newest and held[newest] != sample.value)):
                        return Attempt(classify(400, None), "out of order sample", 0.001)
            for s in request.timeseries:
                held = self.held.setdefault(tuple((lab.name, lab.value) for lab in s.labels), {})
                held.update((x.timestamp, x.value) for x in s.samples)
        return Attempt(classify(204, None), "", 0.001)

    def samples(self) -> int:
        return sum(len(h) for h in self.held.values())


def message(request) -> tuple[bytes, dict[str, str]]:
    return codec.encode(request), codec.message_attributes(codec.Protocol.V1, "default", "now", codec.count(request))


def scrape(step: int, series: int = 100, per: int = 5) -> tuple[bytes, dict[str, str]]:
    """One message: `series` series with `per` samples each, at the step's timestamps (1 s apart)."""
    request = build_v1([Series({"__name__": "order_metric", "i": str(i)},
                               [(BASE + (step * per + k) * 1000, float(step * per + k + i)) for k in range(per)])
                        for i in range(series)])
    return message(request)


def strict_forwarder(delivered: DeliveredLog | None = None, sink: StrictSink | None = None
                     ) -> tuple[Forwarder, StrictSink]:
    sink = sink or StrictSink()
    return Forwarder(config.from_flags([URL], shards=2, order="strict")[0], service=sink, delivered=delivered), sink


# -- the log ---------------------------------------------------------------------------------------

def test_the_log_knows_exact_delivered_timestamps_not_only_the_newest():
    log = DeliveredLog()
    keys = [b"a", b"b"]
    log.record("t", keys, np.array([0, 0, 1], np.uint32), np.array([10, 30, 5], np.int64))
    mask = log.already_delivered("t", keys, np.array([0, 0, 0, 1, 1], np.uint32),
                                 np.array([10, 20, 30, 5, 6], np.int64))
    assert mask.tolist() == [True, False, True, True, False]  # 20 is older than 30 but was never delivered
    assert log.newest("t", b"a") == 30 and log.newest("other-tenant", b"a") is None


def test_the_log_is_bounded_in_samples_oldest_timestamps_first_and_the_floor_says_what_is_forgotten():
    log = DeliveredLog(max_samples=8)
    log.record("t", [b"a", b"b"], np.array([0] * 5 + [1] * 5, np.uint32), np.r_[np.arange(5), np.arange(10, 15)])
    assert log.samples == 10 - 4  # over 8: down to 3/4 of it, the oldest first
    assert log.timestamps("t", b"a").tolist() == [4] and log.timestamps("t", b"b").tolist() == list(range(10, 15))
    assert log.floor("t", b"a") == 4 and log.floor("t", b"b") == 10 and log.floor("t", b"c") is None
    assert log.newest("t", b"a") == 4


def test_the_log_is_bounded_in_series_least_recently_delivered_first():
    log = DeliveredLog(max_series=2)
    log.record("t", [b"a"], np.zeros(5, np.uint32), np.arange(5, dtype=np.int64))
    log.record("t", [b"b"], np.zeros(1, np.uint32), np.array([1], np.int64))
    log.record("t", [b"a"], np.zeros(1, np.uint32), np.array([9], np.int64))  # a is now the most recent
    log.record("t", [b"c"], np.zeros(1, np.uint32), np.array([1], np.int64))
    assert len(log) == 2 and log.newest("t", b"b") is None and log.newest("t", b"a") == 9
    assert log.timestamps("t", b"c").tolist() == [1] and log.samples == 7  # b's timestamp went with it


def test_a_backlog_of_hundreds_of_samples_per_series_is_remembered_whole():
    """After an outage the backlog goes out in requests of hundreds of samples per series: every one of
    them must be known when Pub/Sub brings the messages back."""
    log = DeliveredLog()
    series = np.repeat(np.arange(100, dtype=np.uint32), 240)
    stamps = np.tile(BASE + 1000 * np.arange(240, dtype=np.int64), 100)
    keys = [f"s{i}".encode() for i in range(100)]
    log.record("t", keys, series, stamps)
    assert log.already_delivered("t", keys, series, stamps).all()
    assert not log.already_delivered("t", keys, series, stamps + 500).any()  # in between: never delivered


def test_the_log_round_trips_through_bytes_and_refuses_garbage_with_a_clear_error():
    log = DeliveredLog()
    log.record("tenant-ä", [b"\x0a\x03abc", b""], np.array([0, 0, 1], np.uint32), np.array([3, 1, 7], np.int64))
    log.record("other", [b"x"], np.zeros(2, np.uint32), np.array([40, 50], np.int64))
    again, torn = DeliveredLog.from_bytes(log.to_bytes())
    assert torn is None
    assert again.timestamps("tenant-ä", b"\x0a\x03abc").tolist() == [1, 3]
    assert again.newest("tenant-ä", b"") == 7 and again.floor("tenant-ä", b"") == 7
    assert again.timestamps("other", b"x").tolist() == [40, 50] and again.samples == 5
    with pytest.raises(ValueError, match="bad header"):
        DeliveredLog.from_bytes(b"something else")
    with pytest.raises(ValueError, match="truncated"):
        DeliveredLog.from_bytes(log.to_bytes()[:-3])


@pytest.mark.parametrize("answer", ["out of order sample", "duplicate sample for timestamp",
                                    "err-mimir-sample-out-of-order", "err-mimir-sample-timestamp-too-old",
                                    "out of bounds", "err-mimir-sample-duplicate-timestamp"])
def test_order_refusals_are_recognised(answer):
    assert refused_for_order(f"write: {answer}; series {{a=\"b\"}}")


def test_other_refusals_are_not_order_refusals():
    assert not refused_for_order("label name not valid") and not refused_for_order("duplicate label names")


def test_series_runs():
    assert series_runs(np.array([4, 4, 1, 7, 7, 7], np.uint32)) == [(0, 2), (2, 3), (3, 6)]
    assert series_runs(np.zeros(0, np.uint32)) == []


# -- the forwarder against a strict sink -----------------------------------------------------------

def test_a_redelivered_older_message_after_a_newer_one_is_already_delivered_not_dead_lettered():
    fwd, sink = strict_forwarder()
    assert fwd.forward([scrape(0)]) == [] and fwd.forward([scrape(1)]) == []
    posts = sink.posts
    dead = fwd.forward([scrape(0)])  # Pub/Sub brings the older message back
    stats = fwd.stats.snapshot()
    assert dead == [] and stats["samples_dead_lettered"] == 0
    assert stats["samples_already_delivered"] == 500 and stats["samples_sent"] == 1000
    assert sink.posts == posts  # dropped before sending: the sink never saw it
    assert sink.samples() == 1000


def test_a_mixed_redelivery_sends_only_what_is_new():
    fwd, sink = strict_forwarder()
    fwd.forward([scrape(0)])
    dead = fwd.forward([scrape(0), scrape(1)])
    stats = fwd.stats.snapshot()
    assert dead == [] and (stats["samples_already_delivered"], stats["samples_sent"]) == (500, 1000)
    assert stats["samples_failed"] == 0 and sink.samples() == 1000


def test_a_never_delivered_older_sample_is_a_dead_letter_with_its_reason_and_no_per_sample_split():
    fwd, sink = strict_forwarder()
    fwd.forward([scrape(0, series=50), scrape(1, series=50)])  # every series from BASE to BASE + 9 s, each second
    late = build_v1([Series({"__name__": "order_metric", "i": "7"}, [(BASE + 1500, 1.0), (BASE + 2500, 2.0),
                                                                     (BASE + 20_000, 3.0), (BASE + 21_000, 4.0)])])
    posts = sink.posts
    dead = fwd.forward([message(late)])
    assert sink.posts - posts == 3  # refused; then the never-delivered older part and the newer part, once each
    (record,) = [json.loads(d) for d in dead]
    assert record["status"] == 400 and "never delivered" in record["error"] and str(BASE + 9000) in record["error"]
    assert record["attributes"]["samples"] == "2"
    stats = fwd.stats.snapshot()
    assert (stats["samples_dead_lettered"], stats["samples_already_delivered"]) == (2, 0)
    assert sink.held[(("__name__", "order_metric"), ("i", "7"))][BASE + 21_000] == 4.0


def test_a_refusal_for_a_series_the_record_does_not_know_splits_as_any_refusal():
    sink = StrictSink()
    other, _ = strict_forwarder(sink=sink)
    other.forward([scrape(1, series=3)])  # another writer put newer samples there
    fwd, _ = strict_forwarder(sink=sink)
    records = [json.loads(d) for d in fwd.forward([scrape(0, series=1)])]
    assert sum(int(r["attributes"]["samples"]) for r in records) == 5
    assert all("out of order" in r["error"] for r in records)
    assert fwd.stats.snapshot()["samples_already_delivered"] == 0


def test_a_refused_request_of_many_series_splits_by_series_only():
    fwd, sink = strict_forwarder()
    fwd.forward([scrape(1, series=64)])
    late = build_v1([Series({"__name__": "order_metric", "i": str(i)}, [(BASE + 100_000 + k, 1.0) for k in range(5)])
                     for i in range(64) if i != 9]
                    + [Series({"__name__": "order_metric", "i": "9"}, [(BASE + k, 1.0) for k in range(5)])])
    posts = sink.posts
    dead = fwd.forward([message(late)])
    assert len(dead) == 1 and fwd.stats.snapshot()["samples_dead_lettered"] == 5
    assert sink.posts - posts < 2 * 64  # a bisection over series, not one POST per sample (320)


def test_the_state_survives_a_restart_of_the_forwarder(tmp_path):
    state = DeliveredState(str(tmp_path / "state" / "sink.delivered"))
    fwd, sink = strict_forwarder(state.load())
    fwd.forward([scrape(0)])
    fwd.forward([scrape(1)])
    state.save(fwd.order.delivered)
    fwd.close()
    restarted, _ = strict_forwarder(DeliveredState(state.path).load(), sink=sink)
    assert restarted.forward([scrape(0), scrape(1)]) == []
    assert restarted.stats.snapshot()["samples_already_delivered"] == 1000 and sink.samples() == 1000


def test_an_unreadable_state_file_starts_empty_with_an_error_in_the_log(tmp_path, caplog):
    path = tmp_path / "sink.delivered"
    path.write_bytes(b"not a state file")
    assert len(DeliveredState(str(path)).load()) == 0
    assert "unreadable" in caplog.text


def test_timestamps_across_requests_are_all_kept():
    log = DeliveredLog()
    for start in (0, 3, 6):
        log.record("t", [b"a"], np.zeros(3, np.uint32), np.arange(start, start + 3, dtype=np.int64))
    assert log.timestamps("t", b"a").tolist() == list(range(9)) and log.newest("t", b"a") == 8
    assert log.floor("t", b"a") == 0


def test_each_delivery_is_journaled_at_once_and_a_kill_mid_append_loses_only_the_partial_entry(tmp_path):
    state = DeliveredState(str(tmp_path / "s.delivered"))
    log = state.load()
    log.record("t", [b"a", b"b"], np.array([0, 0, 1], np.uint32), np.array([1, 2, 5], np.int64))
    journal = tmp_path / "s.journal"
    assert journal.stat().st_size > 0 and not (tmp_path / "s.delivered").exists()  # no flush, no snapshot yet
    log.record("t", [b"c"], np.zeros(1, np.uint32), np.array([9], np.int64))
    state.close()
    journal.write_bytes(journal.read_bytes()[:-4])  # the process died while appending the last delivery
    again = DeliveredState(state.path).load()
    assert again.timestamps("t", b"a").tolist() == [1, 2] and again.newest("t", b"b") == 5
    assert again.newest("t", b"c") is None
    assert not journal.exists() and (tmp_path / "s.delivered").exists()  # loading started a clean snapshot
    assert DeliveredState(state.path).load().newest("t", b"b") == 5


def test_the_protobuf_path_drops_redelivered_points_too():
    def with_exemplars(step: int):
        return message(build_v1([Series({"__name__": "ex_metric", "i": str(i)}, [(BASE + step * 1000, 1.0)],
                                        exemplars=[({"trace_id": "t"}, BASE + step * 1000, 1.0)])
                                 for i in range(10)]))

    fwd, sink = strict_forwarder()
    assert fwd.forward([with_exemplars(0)]) == [] and fwd.forward([with_exemplars(1)]) == []
    posts = sink.posts
    assert fwd.forward([with_exemplars(0), with_exemplars(2)]) == []
    stats = fwd.stats.snapshot()
    assert (stats["samples_already_delivered"], stats["samples_sent"], stats["samples_dead_lettered"]) == (10, 30, 0)
    assert sink.posts == posts + posts // 2 and sink.samples() == 30  # one request per shard, as any flush


def test_a_run_that_never_said_it_stopped_is_seen_by_the_next(tmp_path):
    state = DeliveredState(str(tmp_path / "s.delivered"))
    assert state.begin() is False  # a first run
    assert DeliveredState(state.path).begin() is True  # killed: the marker is still there
    state.end()
    assert DeliveredState(state.path).begin() is False
    assert DeliveredState("gs://bucket/_sink_state/s.delivered").begin() is False  # no marker on object stores


def test_requests_in_flight_at_a_kill_are_already_delivered_when_the_sink_refuses_them_for_order(tmp_path):
    sink = StrictSink()
    state = DeliveredState(str(tmp_path / "s.delivered"))
    fwd, _ = strict_forwarder(state.load(), sink=sink)
    fwd.forward([scrape(0, series=10)])
    state.after_flush(fwd.order.delivered)  # the flush is over: nothing in flight
    assert (tmp_path / "s.sending").stat().st_size == 0
    # A request the sink writes while its answer never arrives (the process is killed right then): the
    # forwarder records it as being sent, the sink stores it, and no 2xx is ever recorded.
    request = codec.decode(scrape(1, series=10)[0], codec.Protocol.V1, 1 << 24).message
    for s in request.timeseries:
        fwd.order.delivered.about_to_send("default", [series_key(s)], np.zeros(len(s.samples), np.uint32),
                                    np.array([x.timestamp for x in s.samples], np.int64))
    assert sink.post(codec.encode(request), {"Content-Type": "application/x-protobuf"}).outcome.status == 204
    state.close()  # killed: no 2xx was recorded

    restarted, _ = strict_forwarder(DeliveredState(state.path).load(), sink=sink)
    assert restarted.forward([scrape(1, series=10), scrape(2, series=10)]) == []
    stats = restarted.stats.snapshot()
    assert (stats["samples_already_delivered"], stats["samples_dead_lettered"], stats["samples_sent"]) == (50, 0, 50)
    assert sink.samples() == 150


def test_a_refused_sample_older_than_what_is_remembered_says_it_may_have_been_delivered():
    fwd, sink = strict_forwarder(DeliveredLog(max_samples=8))
    assert fwd.forward([scrape(0, series=1, per=10)]) == []  # 10 delivered, the newest 6 remembered
    (record,) = [json.loads(d) for d in fwd.forward([scrape(0, series=1, per=10)])]
    assert "maybe already delivered" in record["error"] and f"every delivery from {BASE + 4000} ms" in record["error"]
    assert record["attributes"]["samples"] == "4"
    assert fwd.stats.snapshot()["samples_already_delivered"] == 6 and sink.samples() == 10


def test_an_older_sample_partly_remembered_is_split_into_maybe_and_never_delivered():
    fwd, sink = strict_forwarder()
    fwd.forward([scrape(1, series=1)])  # BASE + 5..9 s: the series' record starts at 5 s
    late = build_v1([Series({"__name__": "order_metric", "i": "0"}, [(BASE + 1000, 1.0), (BASE + 6500, 2.0)])])
    maybe, never = [json.loads(d) for d in fwd.forward([message(late)])]
    assert "maybe already delivered" in maybe["error"] and f"every delivery from {BASE + 5000} ms" in maybe["error"]
    assert "never delivered" in never["error"]
    assert [codec.decode(base64.b64decode(r["data_base64"]), codec.Protocol.V1, 1 << 20).message.timeseries[0]
            .samples[0].timestamp for r in (maybe, never)] == [BASE + 1000, BASE + 6500]
    assert sink.samples() == 5


# -- opt-in ------------------------------------------------------------------------------------------

def test_order_is_any_by_default_with_no_record_and_a_bad_value_is_a_clear_error():
    fwd = Forwarder(config.from_flags([URL])[0], service=StrictSink())
    assert config.from_flags([URL])[0].order == "any" and fwd.order is None
    with pytest.raises(config.SinkConfigError, match="order must be any .* or strict .* got 'strickt'"):
        config.from_document(f"remote_write:\n  - {{url: {URL}, order: strickt}}\n")
    assert config.from_document(f"remote_write:\n  - {{url: {URL}, order: strict}}\n")[0].order == "strict"


def test_an_any_sink_that_refuses_for_order_gets_a_record_from_then_on(caplog):
    sink = StrictSink()
    fwd = Forwarder(config.from_flags([URL], shards=2)[0], service=sink)
    fwd.forward([scrape(1)])
    assert fwd.order is None and fwd.forward([scrape(0, series=1)]) != []  # older: refused, dead-lettered
    assert fwd.order is not None and "Set `order: strict`" in caplog.text
    fwd.forward([scrape(2)])
    posts = sink.posts
    assert fwd.forward([scrape(2)]) == [] and sink.posts == posts  # a redelivery now: already delivered
    assert fwd.stats.snapshot()["samples_already_delivered"] == 500
