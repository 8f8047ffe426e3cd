"""The streaming graph's send step for a strict sink (transforms/beam/sink_order.py) with TestStream on the local
streaming runner, against the strict sink model of test_sink_delivered: the delivered record lives in keyed
state (this runner re-creates the DoFn per bundle, so nothing else carries it across flushes), a redelivered
older message is already delivered, a never-delivered older sample is a dead letter with its reason, and
samples that arrive out of order within the reorder horizon are sent in order."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream as EventStream  # not "Test*": pytest would collect it
from apache_beam.transforms.window import TimestampedValue

from tests.unit.test_sink_delivered import URL, StrictSink, scrape
from transforms.beam.archive import DEAD_LETTER
from transforms.beam.sink_order import COMPACT_BYTES, SendInOrder
from transforms.beam.sinks import ShardForSink
from transforms.core.sink import config

MODELS: dict[str, StrictSink] = {}  # the DirectRunner runs in this process: the DoFn finds its sink here


class Model:
    """A picklable transport factory: the shared StrictSink named `name`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self) -> StrictSink:
        return MODELS[self.name]


def run(name: str, steps: list[tuple[int, float]], tmp_path: Path, caplog: pytest.LogCaptureFixture,
        compact_bytes: int = COMPACT_BYTES) -> tuple[StrictSink, list[dict], int]:
    """Publishes scrape(step) at each (step, publish second), the watermark at that second: a flush whenever it
    passes an element's second + the 1 s horizon. Returns the sink model, the dead-letter records and the samples
    counted as already delivered (from the log lines: this runner's Beam counters stay empty in streaming)."""
    MODELS[name] = sink_model = StrictSink()
    sink = config.from_flags([URL], shards=2, order="strict")[0]
    stream = EventStream()
    for step, second in steps:
        data, attributes = scrape(step, series=20)
        stream = stream.advance_watermark_to(second)  # flushes what was held for longer than the horizon
        stream = stream.add_elements([TimestampedValue(PubsubMessage(data, attributes), second)])
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions(["--runner=BundleBasedDirectRunner"])
    options.view_as(StandardOptions).streaming = True
    dead_path = tmp_path / "dead"
    p = beam.Pipeline(options=options)
    sharded = p | stream | beam.ParDo(ShardForSink(sink)).with_outputs(DEAD_LETTER, main="chunks")
    _ = sharded.chunks | beam.ParDo(SendInOrder(sink, str(dead_path), horizon_seconds=1.0,
                                                        compact_bytes=compact_bytes, service=Model(name)))
    with caplog.at_level(logging.INFO, logger="transforms.core.sink.order"):
        p.run().wait_until_finish()
    already = sum(int(n) for n in re.findall(r"(\d+) of \d+ samples already delivered", caplog.text))
    records = [json.loads(line) for path in dead_path.rglob("*.ndjson") for line in path.read_text().splitlines()]
    return sink_model, records, already


def dead_samples(records: list[dict]) -> int:
    return sum(int(record["attributes"]["samples"]) for record in records)


@pytest.mark.parametrize("compact_bytes", [COMPACT_BYTES, 0], ids=["journal", "snapshot-every-flush"])
def test_the_record_survives_across_bundles_and_a_redelivered_older_message_is_already_delivered(
        tmp_path, caplog, compact_bytes):
    sink, dead, already = run(f"redelivery-{compact_bytes}", [(0, 10), (1, 20), (2, 30), (0, 40), (1, 50)], tmp_path,
                              caplog, compact_bytes)
    assert sink.samples() == 3 * 20 * 5
    assert not dead
    assert already == 2 * 20 * 5
    assert sink.posts == 3 * 2  # one request per shard per flush; the redeliveries never reached the sink


def test_a_never_delivered_older_sample_is_a_dead_letter_with_its_reason(tmp_path, caplog):
    # step 1 arrives after step 2 was delivered, outside the horizon: the sink refuses it; the record knows the
    # series from step 0, so step 1 was surely never delivered
    sink, dead, already = run("loss", [(0, 10), (2, 20), (1, 30)], tmp_path, caplog)
    assert sink.samples() == 2 * 20 * 5
    assert dead_samples(dead) == 20 * 5
    assert all("never delivered, and older than the newest sample delivered" in record["error"] for record in dead)
    assert already == 0


def test_out_of_order_arrivals_within_the_horizon_are_sent_in_order(tmp_path, caplog):
    sink, dead, already = run("horizon", [(1, 10.0), (0, 10.2), (2, 20)], tmp_path, caplog)
    assert sink.samples() == 3 * 20 * 5
    assert not dead and not already
    assert sink.posts == 2 * 2  # steps 0 and 1 in one flush per shard, sorted; then step 2


class _Value:
    """A state cell as the DoFn uses it (read/write/add/clear), in memory: the runner's commit, by hand."""

    def __init__(self, bag: bool = False) -> None:
        self.bag, self.items, self.value = bag, [], None

    def read(self):
        return list(self.items) if self.bag else self.value

    def write(self, value) -> None:
        self.value = value

    def add(self, item) -> None:
        self.items.append(item)

    def clear(self) -> None:
        self.items, self.value = [], None

    def set(self, _) -> None:
        pass


class _FailingAfterFirst(StrictSink):
    """Accepts the first request, then fails as a bug or MemoryError would (not an HTTP answer)."""

    def post(self, body, headers, points=0):
        if self.posts:
            raise MemoryError("simulated")
        return super().post(body, headers, points)


def test_a_send_that_raises_midway_leaves_its_deliveries_for_a_whole_snapshot(tmp_path):
    """Deliveries the record took before the exception are not in state yet: the retried bundle must write the
    record whole, so a later worker that reads the state knows them too."""
    MODELS["raising"] = sink_model = _FailingAfterFirst()
    sink = config.from_flags([URL], shards=1, order="strict", max_samples_per_request=50)[0]
    step = SendInOrder(sink, str(tmp_path / "dead"), horizon_seconds=1.0, service=Model("raising"))
    step.setup()
    shard = ShardForSink(sink)
    shard.setup()
    data, attributes = scrape(0, series=20)
    (key, chunk), = [element for element in shard.process(PubsubMessage(data, attributes))]
    state = {name: _Value(bag=name in ("chunks", "held", "journal")) for name in
             ("chunks", "held", "flush", "meta", "snapshot", "journal")}
    state["chunks"].add(chunk)
    with pytest.raises(MemoryError):
        list(step._flush(key, *state.values()))
    assert sink_model.samples() == 50 and state["snapshot"].read() is None  # one request in, nothing saved
    step.driver.service = whole = StrictSink()  # the retried bundle, the sink answering again
    state["chunks"].add(chunk)
    list(step._flush(key, *state.values()))
    assert whole.samples() == 20 * 5 - 50, "what the record took before the exception is not sent again"
    assert state["snapshot"].read(), "the record written whole"
    fresh = SendInOrder(sink, str(tmp_path / "dead"), horizon_seconds=1.0, service=Model("raising"))
    fresh.setup()  # another worker: only the state
    token = state["meta"].read()[0]
    read_back, _ = fresh._record(key, token, state["snapshot"], state["journal"])
    assert read_back.to_bytes() == step._record(key, token, state["snapshot"], state["journal"])[0].to_bytes()
