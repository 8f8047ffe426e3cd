"""The receiver's one walk (transforms.core.wire.validate_only: the compiled decoder in validate-only mode, the
request limits applied as it goes) against the two walks it replaces: prescan.check, then batch.decode.

On small random requests, on Prometheus-sized ones (500-2000 samples), on mutated bytes of both and under
limits the requests cross, both accept the same requests with the same counts, or refuse them with the same
error class (400/413) and the very same message; a shared set of known label sets changes nothing.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import hostile_bodies
from tests.unit import test_wire, test_wire_decode
from transforms.core.errors import PayloadTooLarge, RemoteWriteError
from transforms.core.protocol import Protocol
from transforms.core.wire import batch, codec, prescan, snappy_block, validate_only
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2
from transforms.core.wire.validation import NameValidation

names_modes = st.sampled_from(list(NameValidation))
small_limits = st.builds(prescan.RequestLimits, series=st.integers(0, 8), samples=st.integers(0, 12),
                         labels=st.integers(0, 30), symbols=st.integers(0, 30), buckets=st.integers(0, 20))
# the receiver's defaults, or limits near what a Prometheus-sized request carries
sized_limits = st.one_of(st.just(prescan.RequestLimits()),
                         st.builds(prescan.RequestLimits, series=st.integers(400, 2100),
                                   samples=st.integers(400, 2100), labels=st.integers(1500, 12000),
                                   symbols=st.integers(20, 3000), buckets=st.integers(0, 50)))


def two_walks(payload: bytes, protocol: Protocol, table: batch.SeriesTable, limits: prescan.RequestLimits):
    """What the receiver did before: the pre-scan under the limits, then the full decode."""
    try:
        counts = prescan.check(payload, protocol, limits)
        return batch.decode(payload, protocol, table, counts.samples).counts
    except RemoteWriteError as exc:
        return type(exc), exc.message


def one_walk(payload: bytes, protocol: Protocol, known: validate_only.KnownLabelSets,
             limits: prescan.RequestLimits):
    try:
        return validate_only.validate(payload, protocol, known, limits)
    except RemoteWriteError as exc:
        return type(exc), exc.message


def assert_same(payload: bytes, protocol: Protocol, names: NameValidation, limits: prescan.RequestLimits,
                table: batch.SeriesTable | None = None, known: validate_only.KnownLabelSets | None = None) -> None:
    shared = table is not None
    table = table if table is not None else batch.SeriesTable(names)
    known = known if known is not None else validate_only.KnownLabelSets(names)
    outcome = one_walk(payload, protocol, known, limits)
    assert outcome == two_walks(payload, protocol, table, limits)
    if shared:
        return
    if not isinstance(outcome, tuple):  # accepted: the same label sets passed, under the same keys
        assert known.keys == set(table.slots)
        return
    if outcome[0] is PayloadTooLarge:  # refused for its size: nothing kept
        assert not known.keys
        return
    # refused for a broken rule: what it kept passed the full decode's rules (as the pipeline's table keeps the
    # label sets a failed decode validated before failing)
    unlimited = batch.SeriesTable(names)
    try:
        batch.decode(payload, protocol, unlimited)
    except RemoteWriteError:
        pass
    assert known.keys <= set(unlimited.slots)


@st.composite
def sized_requests(draw, protocol: Protocol):
    """A request as Prometheus sends it (one sample per series) or batched (ten per series): 500-2000 samples
    over a few hundred label sets, now and then a broken label set, a histogram, an exemplar or metadata."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    per_series = draw(st.sampled_from([1, 10]))
    n_series = draw(st.integers(500, 2000)) // per_series
    broken = draw(st.sampled_from([0, 0, 0, 0.001, 0.01]))
    extras = draw(st.sampled_from([0, 0, 0.002, 0.02]))
    pool = [[("__name__", f"metric_{rng.randrange(40)}"), ("instance", f"10.0.{rng.randrange(4)}.{i % 250}:9100"),
             ("job", rng.choice(["node", "api", "db"]))] for i in range(300)]
    rows = []
    for _ in range(n_series):
        labels = list(rng.choice(pool))
        if rng.random() < broken:
            labels = rng.choice([labels[::-1], labels[1:], labels + [("job", "x")], [("__name__", "")] + labels[1:]])
        samples = [(float(rng.randrange(1000)), 1_700_000_000_000 + 15_000 * k) for k in range(per_series)]
        rows.append((labels, samples, rng.random() < extras, rng.random() < extras))
    return _v1(rows, rng) if protocol is Protocol.V1 else _v2(rows, rng)


def _v1(rows, rng: random.Random) -> remote_v1_pb2.WriteRequest:
    request = remote_v1_pb2.WriteRequest()
    for labels, samples, histogram, exemplar in rows:
        series = request.timeseries.add()
        for name, value in labels:
            series.labels.add(name=name, value=value)
        if histogram:
            h = series.histograms.add(count_int=3, schema=1, timestamp=samples[0][1])
            h.positive_spans.add(offset=0, length=2)
            h.positive_deltas.extend([1, 1])
        else:
            for value, timestamp in samples:
                series.samples.add(value=value, timestamp=timestamp)
        if exemplar:
            series.exemplars.add(value=1.0, timestamp=samples[0][1]).labels.add(name="trace_id", value="ab")
        if rng.random() < 0.01:
            request.metadata.add(type=1, metric_family_name=labels[0][1], help="h")
    return request


def _v2(rows, rng: random.Random) -> remote_v2_pb2.Request:
    request = remote_v2_pb2.Request()
    symbols: dict[str, int] = {"": 0}

    def ref(text: str) -> int:
        return symbols.setdefault(text, len(symbols))

    for labels, samples, histogram, exemplar in rows:
        series = request.timeseries.add(labels_refs=[ref(s) for pair in labels for s in pair])
        if histogram:
            h = series.histograms.add(count_int=3, schema=1, timestamp=samples[0][1])
            h.positive_spans.add(offset=0, length=2)
            h.positive_deltas.extend([1, 1])
        else:
            for value, timestamp in samples:
                series.samples.add(value=value, timestamp=timestamp, start_timestamp=1_699_999_999_000)
        if exemplar:
            series.exemplars.add(value=1.0, timestamp=samples[0][1], labels_refs=[ref("trace_id"), ref("ab")])
        if rng.random() < 0.01:
            series.metadata.type = 1
            series.metadata.help_ref = ref("help")
    request.symbols.extend(symbols)
    return request


SMALL = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SIZED = settings(max_examples=120, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
protocols = st.sampled_from([Protocol.V1, Protocol.V2])


def _small(protocol: Protocol, draw_from: st.DataObject):
    """Small requests of both test modules' strategies: broken rules (test_wire_decode), histograms of every
    bucket kind (test_wire)."""
    module = draw_from.draw(st.sampled_from([test_wire, test_wire_decode]))
    return module.v1_requests() if protocol is Protocol.V1 else module.v2_requests()


@SMALL
@given(protocols, names_modes, st.one_of(st.just(prescan.RequestLimits()), small_limits), st.data())
def test_small_requests_get_the_same_outcome(protocol, names, limits, data):
    request = data.draw(_small(protocol, data))
    assert_same(request.SerializeToString(), protocol, names, limits)


# a slice: make fuzz (tools/fuzz_wire.py) compares the two paths on 1 M mutated bodies
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(protocols, names_modes, st.one_of(st.just(prescan.RequestLimits()), small_limits), st.data())
def test_mutated_small_requests_get_the_same_outcome(protocol, names, limits, data):
    payload = data.draw(test_wire.mutated(_small(protocol, data)))
    assert_same(payload, protocol, names, limits)


@SIZED
@given(protocols, names_modes, sized_limits, st.data())
def test_prometheus_sized_requests_get_the_same_outcome(protocol, names, limits, data):
    request = data.draw(sized_requests(protocol))
    assert_same(request.SerializeToString(), protocol, names, limits)


@SIZED
@given(protocols, names_modes, sized_limits, st.data())
def test_mutated_prometheus_sized_requests_get_the_same_outcome(protocol, names, limits, data):
    payload = data.draw(test_wire.mutated(sized_requests(protocol)))
    assert_same(payload, protocol, names, limits)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(protocols, names_modes, st.lists(st.data(), min_size=2, max_size=4))
def test_known_label_sets_shared_across_requests_change_nothing(protocol, names, draws):
    """A label set validated by an earlier request is skipped by a later one, in both paths alike (the tables
    renewed along the way too)."""
    table, known = batch.SeriesTable(names, limit=500), validate_only.KnownLabelSets(names, limit=500)
    for data in draws:
        payload = data.draw(st.one_of(sized_requests(protocol).map(lambda r: r.SerializeToString()),
                                      test_wire.mutated(sized_requests(protocol))))
        assert_same(payload, protocol, names, prescan.RequestLimits(), table, known)


@pytest.mark.parametrize("shape", list(hostile_bodies.SHAPES))
def test_each_hostile_shape_is_refused_by_the_one_walk_with_the_pre_scans_413(shape):
    protocol, body = hostile_bodies.body(shape, 16 * 1024 * 1024)
    known = validate_only.KnownLabelSets()
    with pytest.raises(PayloadTooLarge, match=r"over the limit of --max-\w+-per-request") as caught:
        codec.validate(body, protocol, 16 * 1024 * 1024, prescan.RequestLimits(), known)
    with pytest.raises(PayloadTooLarge) as before:
        codec.decode(body, protocol, 16 * 1024 * 1024, limits=prescan.RequestLimits())
    assert caught.value.message == before.value.message
    assert not known.keys  # a request refused for its size leaves nothing behind


def test_a_validated_request_parses_its_message_only_when_asked():
    request = remote_v1_pb2.WriteRequest()
    series = request.timeseries.add()
    series.labels.add(name="__name__", value="up")
    series.samples.add(value=1.0, timestamp=1)
    validated = codec.validate(snappy_block.compress(request.SerializeToString()), Protocol.V1, 1 << 20,
                               prescan.RequestLimits(), validate_only.KnownLabelSets())
    assert "message" not in validated.__dict__
    assert validated.message == request
    assert (validated.counts.series, validated.counts.samples, validated.uncompressed_bytes) == (
        1, 1, request.ByteSize())
