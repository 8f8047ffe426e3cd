"""The compiled archive-line parser (transforms.core.wire.line_columns, records.ndjson_columns) against the
json path it replaces for restore (json.loads + records.record_samples on every line).

Equal means: the same float samples in the same order (name, tags, ms, kind, value bits, start ms), and the
same histogram and exemplar samples; where the json path raises, so does the parser's. Lines the pipeline
writes (compiled format_lines and Python metric_to_log, every value kind, odd NaN payloads, UTF-8 and
escaped labels) must all be taken by the compiled parser, not declined; malformed input never crashes it.
"""

from __future__ import annotations

import json
import math
import random
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.archive_samples import ODD_NAN, T0, sample_request
from tests.unit.test_restore_selection import start_request
from tests.unit.test_wire_decode import v1_requests, v2_requests
from transforms.core.archive import metric_to_log
from transforms.core.archive.lines import BatchLines
from transforms.core.archive.metric_to_log import ConversionError
from transforms.core.archive.records import _FIXED, SAMPLE_KINDS, ndjson_columns, record_samples
from transforms.core.metadata import MetadataStore
from transforms.core.protocol import STALE_NAN, Protocol, float_bits
from transforms.core.wire import _wire, codec, line_columns, snappy_block
from transforms.core.wire.builders import Series, build_v1

FLOATS = ("counter", "gauge")


def comparable(sample) -> tuple:
    payload = float_bits(sample.payload) if sample.kind in FLOATS else sample.payload
    if sample.kind == "exemplar":
        payload = (float_bits(payload[0]), payload[1])
    elif sample.kind == "native_histogram":
        payload = {k: [float_bits(x) if isinstance(x, float) else x for x in v] if isinstance(v, list)
                   else float_bits(v) if isinstance(v, float) else v for k, v in payload.items()}
    return sample.name, list(sample.labels), sample.ms, sample.kind, payload, sample.start


def by_json(data: bytes) -> tuple[list, list]:
    """The json path: (float samples, other samples), comparable, in line order."""
    samples = [comparable(s) for s in record_samples(json.loads(line) for line in data.decode().split("\n") if line)]
    return [s for s in samples if s[3] in FLOATS], [s for s in samples if s[3] not in FLOATS]


def by_columns(data: bytes) -> tuple[list, list]:
    cols = ndjson_columns(data)
    starts = cols.starts if cols.starts is not None else np.zeros(len(cols.stamps), np.int64)
    floats = [(cols.names[run], list(cols.labels[run]), ms, SAMPLE_KINDS[kind - 1], bits, start)
              for run, ms, kind, bits, start in zip(cols.row_run.tolist(), cols.stamps.tolist(), cols.kinds.tolist(),
                                                    cols.values.view(np.uint64).tolist(), starts.tolist(), strict=True)]
    return floats, [comparable(s) for s in cols.others]


def assert_same(data: bytes) -> None:
    try:
        expected: tuple | type = by_json(data)
    except Exception as exc:  # a file the json path cannot read: the parser's path refuses it too
        expected = type(exc)
    if isinstance(expected, type):
        with pytest.raises(Exception):  # noqa: B017 (json, records or UTF-8 errors, whichever the line meets)
            by_columns(data)
        return
    assert by_columns(data) == expected


def declined(data: bytes) -> int:
    return len(line_columns.parse(data, _FIXED).declined)


def lines_both_ways(requests, protocol: Protocol) -> list[bytes]:
    """Each request's archive lines as the pipeline writes them (compiled for float-only batches, metric_to_log
    otherwise) and as metric_to_log writes them; requests the receiver refuses are skipped."""
    converter = BatchLines(MetadataStore())
    out = []
    for request in requests:
        try:
            batch = codec.decode(snappy_block.compress(request.SerializeToString()), protocol, 1 << 24,
                                 table=converter.table("t")).batch
        except Exception:
            continue
        try:
            out += [block.data for block in converter.convert(batch, "t").values()]
            out += ["".join(f"{line}\n" for line in lines).encode() for lines in
                    metric_to_log.convert(batch.message, protocol, "t", MetadataStore()).values()]
        except ConversionError:  # a timestamp outside datetime's range: never archived
            continue
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([Protocol.V1, Protocol.V2]), st.data())
def test_the_pipelines_lines_parse_to_exactly_the_json_paths_samples(protocol, data) -> None:
    strategy = v1_requests() if protocol is Protocol.V1 else v2_requests()
    blocks = lines_both_ways(data.draw(st.lists(strategy, min_size=1, max_size=3)), protocol)
    whole = b"".join(blocks)
    assert_same(whole)
    floats, others = by_json(whole)
    assert declined(whole) == len(others)  # every float line taken by the compiled parser


def test_every_value_kind_and_start_timestamps_are_taken_and_exact() -> None:
    values = [1.5, -0.0, 0.0, 5e-324, 1e300, -1e-300, 0.1, 123456789.123, 1e16, 2.0**53 + 2, math.inf, -math.inf,
              STALE_NAN, float("nan"), ODD_NAN, struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000001))[0],
              struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000001))[0]]
    request = build_v1([Series({"__name__": "m_total", "job": "a", "zone": "東京", "q": 'x"\\\n\t\x01é'},
                               [(T0 - 10**12 + i * 1234567, v) for i, v in enumerate(values)])])
    lines = [r for rs in metric_to_log.convert_v1(request, "t", MetadataStore()).values() for r in rs]
    lines += [r for rs in metric_to_log.convert_v2(start_request(), "t").values() for r in rs]
    data = ("\n".join(lines) + "\n").encode()
    assert_same(data)
    floats, others = by_columns(data)
    assert [s[4] for s in floats[:len(values)]] == [float_bits(v) for v in values]
    assert {s[5] for s in floats} == {0, T0 - 60_000, T0 - 5_000}
    assert declined(data) == len(others) == 2  # start_request's histogram and exemplar


# Lines of other shapes: each is declined and read by json exactly as before (or refused as before).
HEAD = '{"name":"up","tags":{"job":"a"},'
TAIL = '"timestamp":"2026-11-25T09:00:00.123Z","kind":"absolute","gauge":{"value":1.5}}'
ODD_LINES = [
    HEAD + TAIL.replace("1.5", "-0"),  # an int literal: +0.0 (json reads an int, then float())
    HEAD + TAIL.replace("1.5", "12345678901234567890123"),  # a long int
    HEAD + TAIL.replace("1.5", "1e400"), HEAD + TAIL.replace("1.5", "-1E-400"),
    HEAD + TAIL.replace("1.5", "0.1000000000000000055511151231257827021181583404541015625"),
    HEAD + TAIL.replace("1.5", "NaN"), HEAD + TAIL.replace("1.5", "-Infinity"),  # json's own constants
    HEAD + TAIL.replace("1.5", '"NaN:0x7FF8000000000ABC"'), HEAD + TAIL.replace("1.5", '"NaN:0x7ff80000000_0abc"'),
    HEAD + TAIL.replace("1.5", '"\\u004eaN"'), HEAD + TAIL.replace("1.5", '"nan"'), HEAD + TAIL.replace("1.5", "01"),
    HEAD + TAIL.replace("1.5", "1."), HEAD + TAIL.replace("1.5", ".5"), HEAD + TAIL.replace("1.5", "true"),
    HEAD + TAIL.replace('"kind":"absolute",', ""), HEAD + TAIL.replace("absolute", "incremental"),
    HEAD + TAIL.replace(".123Z", ".123z"), HEAD + " " + TAIL, HEAD + TAIL + " ", HEAD + TAIL + "\r",
    HEAD + TAIL.replace("2026-11-25T09", "2026-02-31T25"),  # calendar.timegm adds these up: taken as it does
    HEAD + TAIL.replace("2026-11-25", "2026-13-25"), HEAD + TAIL.replace("2026-", "0000-"),
    HEAD + TAIL.replace("2026-", "12026-"), HEAD + TAIL.replace(".123", ". 12"), HEAD + TAIL.replace("-11-", "x11-"),
    HEAD + TAIL.replace("}}", '},"start_timestamp":""}'), HEAD + TAIL.replace("}}", '},"start_timestamp":null}'),
    HEAD + TAIL.replace("}}", '},"start_timestamp":"1970-01-01T00:00:00.000Z"}'),
    HEAD + TAIL.replace('"gauge"', '"counter"').replace("}}", ',"other":1}}'),
    '{"name":"up","tags":{"job":"a","job":"b","a":"c"},' + TAIL,  # duplicate tag: the last value, first place
    '{"name":"up","tags":{"__name__":"x"},' + TAIL, '{"name":"up","tags":{},' + TAIL, '{"name":"","tags":{},' + TAIL,
    '{"name":"\\ud83d\\ude00 \\u00e9\\n\\/\\"\\\\","tags":{"\\u0041":"\\ud800","b":"\\udc00\\ud800x"},' + TAIL,
    '{"name":"up","tags":{"a":"\\ud800\\u0041\\uDBFF\\uDFFF"},' + TAIL, '{"name":"up","tags":{"a":"\\x41"},' + TAIL,
    '{"name":"up","tags":{"a":"\\u12"},' + TAIL, '{"name":"up","tags":{"a":"\t"},' + TAIL,
    '{"name":"up","tags":{"a":1},' + TAIL, '{"name":"up","tags":[],' + TAIL, '{"name":5,"tags":{},' + TAIL,
    '{"name":"up","tags":{"a":"},\\"timestamp\\":\\"x"},' + TAIL, '{"name":"up","tags":{"a":"b"} ,' + TAIL,
    '{"tags":{},"name":"up",' + TAIL, '{ "name":"up","tags":{},' + TAIL, '{"name":"up","tags":{"a":"b",},' + TAIL,
    '{"name":"up"}', "[]", "5", '"x"', "{", "}", "",
]


@pytest.mark.parametrize("line", ODD_LINES)
def test_a_line_of_another_shape_reads_as_the_json_path_reads_it(line: str) -> None:
    good = HEAD + TAIL
    assert_same(f"{line}\n".encode())
    assert_same(f"{good}\n{line}\n{good}\n{line}".encode())  # its place among taken lines is kept


def test_declined_float_lines_keep_their_order_among_taken_ones() -> None:
    good = HEAD + TAIL
    odd = [HEAD + " " + TAIL.replace("1.5", "2.5"), HEAD + TAIL.replace("1.5", '"\\u004eaN"'),  # json: "NaN"
           HEAD + TAIL.replace("1.5", "-0")[:-1] + " }"]
    data = "\n".join([*odd, good, odd[1], good, good, *odd[::-1]]).encode()
    assert declined(data) == 7
    assert_same(data)
    assert [s[4] for s in by_columns(data)[0]][:4] == [float_bits(2.5), 0x7FF8000000000001, 0, float_bits(1.5)]


def test_the_pipelines_own_shape_with_escapes_is_taken() -> None:
    data = ('{"name":"\\u00e9\\ud83d\\ude00","tags":{"a":"\\"\\\\\\n\\u0001"},' + TAIL + "\n").encode()
    assert declined(data) == 0
    assert by_columns(data)[0][0][:2] == ("é😀", [("a", '"\\\n\x01')])
    assert_same(data)


@given(st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6)), max_size=4), st.text(max_size=6),
       st.sampled_from([(",", ":"), (", ", ": ")]), st.booleans(),
       st.one_of(st.floats(allow_nan=False), st.integers(-(2**70), 2**70)))
@settings(max_examples=300, deadline=None)
def test_json_written_by_json_dumps_reads_the_same(tags, name, separators, ascii_only, value) -> None:
    """Escaped and unescaped UTF-8 (json.dumps' ensure_ascii writes surrogate pairs), other separators, ints."""
    record = {"name": name, "tags": dict(tags), "timestamp": "2026-11-25T09:00:00.123Z", "kind": "absolute",
              "counter": {"value": value}}
    line = json.dumps(record, ensure_ascii=ascii_only, separators=separators)
    assert_same(f"{line}\n{line}\n".encode())


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(out))
        action = rng.randrange(4)
        if action == 0 and out:
            out[min(at, len(out) - 1)] = rng.choice([rng.randrange(256), *b'"\\{},:.-0e\n'])
        elif action == 1:
            del out[at:at + rng.randint(1, 8)]
        elif action == 2:
            out[at:at] = rng.randbytes(rng.randint(1, 4))
        else:
            out[at:at] = out[at:at + rng.randint(1, 40)]
    return bytes(out)


def test_mutated_files_read_as_the_json_path_reads_them_or_fail_as_it_does() -> None:
    lines = [r for rs in metric_to_log.convert_v1(sample_request(), "t", MetadataStore()).values() for r in rs]
    lines += [r for rs in metric_to_log.convert_v2(start_request(), "t").values() for r in rs]
    lines.append('{"name":"\\u00e9\\ud83d\\ude00","tags":{"a":"\\"\\\\\\n\\u0001"},' + TAIL)
    data = ("\n".join(lines) + "\n").encode()
    rng = random.Random(5)
    for _ in range(3000):
        assert_same(mutate(data, rng))


def test_every_prefix_of_a_line_and_random_bytes_never_crash() -> None:
    line = (b'{"name":"\\u00e9","tags":{"a":"b"},"timestamp":"2026-11-25T09:00:00.123Z","kind":"absolute",'
            b'"counter":{"value":"NaN:0x7ff8000000000abc"},"start_timestamp":"2026-11-25T08:00:00.000Z"}')
    for cut in range(len(line)):
        parsed = line_columns.parse(line[:cut], _FIXED)
        assert len(parsed.timestamps) == 0 and len(parsed.declined) == (1 if cut else 0)
    assert len(line_columns.parse(line, _FIXED).timestamps) == 1
    rng = random.Random(3)
    for _ in range(2000):
        parsed = line_columns.parse(rng.randbytes(rng.randint(0, 300)), _FIXED)
        assert len(parsed.timestamps) + len(parsed.declined) <= 301


def test_many_distinct_series_and_a_bad_specials_table() -> None:
    lines = "".join(f'{{"name":"m","tags":{{"i":"{i}"}},{TAIL}\n' for i in range(5000)) * 2
    cols = ndjson_columns(lines.encode())
    assert len(cols.names) == 5000 and cols.row_run.tolist() == list(range(5000)) * 2
    with pytest.raises(TypeError):
        _wire.parse_lines(b"", [("+Inf", 1.0)])
    with pytest.raises(TypeError):
        _wire.parse_lines(b"", (("+Inf", 1.0),))
