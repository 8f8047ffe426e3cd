"""The compiled decode + validate (transforms.core.wire.batch via codec.decode) against the upb oracle
(tests/reference/validation.py's decode_with_upb: upb parse + the rules in Python).

On random and adversarial requests both accept the same requests with the same counts and the same
content (labels, sample bits, timestamps, 2.0 start/created timestamps and types, metadata), or both
refuse them with the same status, and with the same message for every broken rule.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reference.metric_to_log import convert
from tests.reference.validation import decode_with_upb
from tests.unit.test_wire import mutated
from transforms.core.archive.lines import BatchLines
from transforms.core.archive.metric_to_log import ConversionError
from transforms.core.errors import RemoteWriteError
from transforms.core.metadata import MetadataStore
from transforms.core.protocol import STALE_NAN_BITS, Protocol, float_bits, ref_pairs
from transforms.core.wire import codec, prescan, snappy_block
from transforms.core.wire.batch import SeriesTable, column
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2
from transforms.core.wire.validation import NameValidation

NAN_BITS = [STALE_NAN_BITS, 0x7FF8000000000001, 0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001,
            0x7FFFFFFFFFFFFFFF]
values = st.one_of(
    st.floats(), st.sampled_from([0.0, -0.0, float("inf"), float("-inf"), 1e16, 5e-324, 0.1]),
    st.sampled_from(NAN_BITS).map(lambda bits: struct.unpack("<d", struct.pack("<Q", bits))[0]))
# names that pass the legacy rules, names that pass only the UTF-8 rules, and ones that pass neither
label_names = st.one_of(st.sampled_from(["__name__", "a", "job", "instance", "le", "_x", "a:b", "9x", "", "é", "名"]),
                        st.text(max_size=5))
label_values = st.one_of(st.sampled_from(["", "up", "http_requests_total", "x:y", "1bad", "ünï"]),
                         st.text(max_size=8), st.just("v" * 2048))
timestamps = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**42))


@st.composite
def label_sets(draw, valid: bool = True) -> list[tuple[str, str]]:
    """Valid label sets (sorted, unique, with __name__; legacy or UTF-8 names), or anything when not `valid`."""
    if not valid:
        pairs = draw(st.lists(st.tuples(label_names, label_values), max_size=5))
        if draw(st.booleans()):
            pairs.append(("__name__", draw(label_values)))
            pairs = sorted(dict(pairs).items(), key=lambda p: p[0].encode())
        return pairs
    names = draw(st.lists(st.sampled_from(["a", "job", "instance", "le", "_x", "é", "名", "a.b"]), max_size=4,
                          unique=True))
    pairs = [(name, draw(label_values)) for name in names]
    pairs.append(("__name__", draw(st.sampled_from(["up", "http_requests_total", "a:b", "ünï", "x.y"]))))
    return sorted(pairs, key=lambda p: p[0].encode())


def _histogram(histogram, draw) -> None:
    if draw(st.booleans()):
        histogram.count_int = draw(st.integers(0, 2**64 - 1))
    else:
        histogram.count_float = draw(values)
    histogram.schema = draw(st.integers(-53, 8))
    for _ in range(draw(st.integers(0, 2))):
        histogram.positive_spans.add(offset=draw(st.integers(-5, 5)), length=draw(st.integers(0, 3)))
    histogram.positive_deltas.extend(draw(st.lists(st.integers(-(2**40), 2**40), max_size=3)))
    histogram.negative_counts.extend(draw(st.lists(values, max_size=3)))
    histogram.timestamp = draw(timestamps)


@st.composite
def v1_requests(draw) -> remote_v1_pb2.WriteRequest:
    request = remote_v1_pb2.WriteRequest()
    valid = draw(st.integers(0, 3)) > 0
    for _ in range(draw(st.integers(0, 5))):
        series = request.timeseries.add()
        for name, value in draw(label_sets(valid or draw(st.booleans()))):
            series.labels.add(name=name, value=value)
        for _ in range(draw(st.integers(0, 3))):
            series.samples.add(value=draw(values), timestamp=draw(timestamps))
        if draw(st.integers(0, 5)) == 0:
            exemplar = series.exemplars.add(value=draw(values), timestamp=draw(timestamps))
            for name, value in draw(label_sets(False)):
                exemplar.labels.add(name=name, value=value)
        if draw(st.integers(0, 5)) == 0:
            _histogram(series.histograms.add(), draw)
    for _ in range(draw(st.integers(0, 2))):
        request.metadata.add(type=draw(st.integers(0, 9)), metric_family_name=draw(label_values),
                             help=draw(label_values), unit=draw(label_values))
    return request


@st.composite
def v2_requests(draw) -> remote_v2_pb2.Request:
    request = remote_v2_pb2.Request()
    symbols = [draw(st.sampled_from(["", "", "", "", "", "x"]))]
    index: dict[str, int] = {}

    def ref(text: str) -> int:
        if text not in index:
            index[text] = len(symbols)
            symbols.append(text)
        return index[text]

    valid = draw(st.integers(0, 3)) > 0
    for _ in range(draw(st.integers(0, 5))):
        series = request.timeseries.add()
        bad = not valid and draw(st.booleans())
        refs = [ref(s) for pair in draw(label_sets(not bad)) for s in pair]
        if bad and draw(st.booleans()):  # odd length or out of range
            refs.append(draw(st.integers(0, 2**32 - 1)))
        series.labels_refs.extend(refs)
        kind = draw(st.sampled_from(["samples", "histograms", "both", "none"] if bad else ["samples", "histograms"]))
        if kind in ("samples", "both"):
            for _ in range(draw(st.integers(1, 3))):
                series.samples.add(value=draw(values), timestamp=draw(timestamps),
                                   start_timestamp=draw(st.sampled_from([0, 0, 1, 2**41])))
        if kind in ("histograms", "both"):
            _histogram(series.histograms.add(), draw)
        if draw(st.integers(0, 4)) == 0:
            exemplar = series.exemplars.add(value=draw(values), timestamp=draw(timestamps))
            exemplar.labels_refs.extend([ref(s) for pair in draw(label_sets(not bad)) for s in pair])
            if bad and draw(st.booleans()):
                exemplar.labels_refs.append(draw(st.integers(0, 2**32 - 1)))
        if draw(st.booleans()):
            series.metadata.type = draw(st.integers(0, 9))
            series.metadata.help_ref = ref(draw(label_values))
            series.metadata.unit_ref = draw(st.sampled_from([0, ref("seconds"), 1000] if bad else [0, ref("s")]))
        if draw(st.integers(0, 4)) == 0:
            series.created_timestamp = draw(timestamps)
    request.symbols.extend(symbols)
    return request


def _outcome(decode, body: bytes, protocol: Protocol, names: NameValidation):
    """Both paths as the receiver runs them: the pre-scan first (with the default limits), so groups and
    malformed bytes are refused alike (bare upb accepts groups in unknown fields; the scan never has)."""
    try:
        return decode(body, protocol, 1 << 24, names, prescan.RequestLimits())
    except RemoteWriteError as exc:
        return exc


def _samples_of_message(message, protocol: Protocol) -> list[tuple]:
    out = []
    for index, series in enumerate(message.timeseries):
        for sample in series.samples:
            start = sample.start_timestamp if protocol is Protocol.V2 else 0
            out.append((index, sample.timestamp, float_bits(sample.value), start))
    return out


def _samples_of_batch(batch, protocol: Protocol) -> list[tuple]:
    starts = column(batch, "starts") if protocol is Protocol.V2 else [0] * len(column(batch, "timestamps"))
    bits = memoryview(batch.values).cast("Q")
    return list(zip(column(batch, "sample_series"), column(batch, "timestamps"), bits, starts, strict=True))


def assert_same(body: bytes, protocol: Protocol, names: NameValidation, table: SeriesTable) -> None:
    compiled = _outcome(lambda *args: codec.decode(*args, table=table), body, protocol, names)
    reference = _outcome(decode_with_upb, body, protocol, names)
    if isinstance(reference, RemoteWriteError):
        assert isinstance(compiled, RemoteWriteError), f"upb refused ({reference}), compiled accepted"
        assert compiled.status == reference.status
        if not reference.message.startswith("protobuf:"):  # a broken rule: the very same message
            assert compiled.message == reference.message
        else:
            assert compiled.message.startswith("protobuf:")
        return
    assert not isinstance(compiled, RemoteWriteError), f"compiled refused ({compiled}), upb accepted"
    message, counts = reference
    batch = compiled.batch
    assert compiled.counts == counts
    slots = column(batch, "series_slot")
    for index, series in enumerate(message.timeseries):
        if protocol is Protocol.V1:
            expected = tuple((label.name, label.value) for label in series.labels)
        else:
            expected = tuple(ref_pairs(series.labels_refs, message.symbols))
        assert batch.labels[slots[index]] == expected
        assert batch.names[slots[index]] == dict(expected)["__name__"]
    assert _samples_of_batch(batch, protocol) == _samples_of_message(message, protocol)
    assert batch.slow == [i for i, s in enumerate(message.timeseries) if len(s.histograms) or len(s.exemplars)]
    # the side data: each slow series' own bytes parse to that series; 2.0 symbols read from the payload
    assert [(i, s) for i, s in batch.side_series()] == [(i, message.timeseries[i]) for i in batch.slow]
    if protocol is Protocol.V2 and batch.slow:
        assert [batch.symbols[i] for i in range(len(batch.symbols))] == list(message.symbols)
    if protocol is Protocol.V1:
        assert batch.families == [(m.metric_family_name, m.type) for m in message.metadata]
    else:
        assert list(column(batch, "types")) == [s.metadata.type for s in message.timeseries]
        assert list(column(batch, "created")) == [s.created_timestamp for s in message.timeseries]


EQUIVALENCE = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
names_modes = st.sampled_from(list(NameValidation))


@EQUIVALENCE
@given(v1_requests(), names_modes)
def test_v1_compiled_equals_upb(request, names):
    assert_same(snappy_block.compress(request.SerializeToString()), Protocol.V1, names, SeriesTable(names))


@EQUIVALENCE
@given(v2_requests(), names_modes)
def test_v2_compiled_equals_upb(request, names):
    assert_same(snappy_block.compress(request.SerializeToString()), Protocol.V2, names, SeriesTable(names))


@EQUIVALENCE
@given(st.lists(v1_requests(), min_size=2, max_size=4), names_modes)
def test_a_shared_series_table_changes_nothing(requests, names):
    """Label sets remembered from earlier requests (valid or not) never change a later request's outcome."""
    table = SeriesTable(names, limit=3)  # small: the table is also renewed along the way
    for request in requests:
        assert_same(snappy_block.compress(request.SerializeToString()), Protocol.V1, names, table)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([Protocol.V1, Protocol.V2]), names_modes, st.data())
def test_mutated_bytes_get_the_same_status_and_rule_messages(protocol, names, data):
    payload = data.draw(mutated(v1_requests() if protocol is Protocol.V1 else v2_requests()))
    assert_same(snappy_block.compress(payload), protocol, names, SeriesTable(names))


@pytest.mark.parametrize("protocol", [Protocol.V1, Protocol.V2])
@pytest.mark.parametrize("last_byte", [0x01, 0x02, 0x7F])
def test_a_ten_byte_varint_with_bits_past_64_is_read_as_upb_reads_it(protocol, last_byte):
    """Found by the mutation test above: upb (and Go's gogo-protobuf) keep a tenth varint byte's low bits and
    drop the rest; the compiled reader once refused it (400) where upb accepted the request."""
    timestamp = b"\x10" + b"\xff" * 9 + bytes([last_byte])  # sample field 2, int64
    sample = b"\x12" + bytes([len(timestamp)]) + timestamp
    if protocol is Protocol.V1:
        series = b"\x0a\x0e\x0a\x08__name__\x12\x02up" + sample
        payload = b"\x0a" + bytes([len(series)]) + series
    else:
        series = b"\x0a\x02\x01\x02" + sample  # labels_refs [1, 2]: __name__="up"
        payload = b"\x22\x00\x22\x08__name__\x22\x02up\x2a" + bytes([len(series)]) + series
    body = snappy_block.compress(payload)
    assert not isinstance(_outcome(decode_with_upb, body, protocol, NameValidation.UTF8), RemoteWriteError)
    assert_same(body, protocol, NameValidation.UTF8, SeriesTable(NameValidation.UTF8))


@EQUIVALENCE
@given(st.sampled_from([Protocol.V1, Protocol.V2]), st.data())
def test_compiled_archive_lines_are_byte_identical_to_metric_to_log(protocol, data):
    """Lines from the batch (transforms.core.archive.lines, compiled) equal metric_to_log's over the message,
    partition by partition, and a timestamp out of range fails both with the same message."""
    request = data.draw(v1_requests() if protocol is Protocol.V1 else v2_requests())
    body = snappy_block.compress(request.SerializeToString())
    lines = BatchLines(MetadataStore())
    try:
        decoded = codec.decode(body, protocol, 1 << 24, table=lines.table("t"))
    except RemoteWriteError:
        return
    try:
        reference = {partition: ("\n".join(records) + "\n").encode()
                     for partition, records in convert(decoded.message, protocol, "t", MetadataStore()).items()
                     if records}
    except ConversionError as exc:
        reference = str(exc)
    try:
        compiled = {partition: block.data for partition, block in lines.convert(decoded.batch, "t").items()}
    except ConversionError as exc:
        compiled = str(exc)
    assert compiled == reference
