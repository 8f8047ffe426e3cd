"""The compiled decoder when memory runs out: every allocation of a decode is made to fail in turn (CPython's
_testcapi.set_nomemory). Each failure is a MemoryError, and the series table is left either as it was or
with the request's new series fully added: never a name without its labels, head or slot."""

from __future__ import annotations

import pytest

from transforms.core.protocol import Protocol
from transforms.core.wire import _wire
from transforms.core.wire.batch import SeriesTable
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2

_testcapi = pytest.importorskip("_testcapi")


def _known(count: int) -> list[list[tuple[str, str]]]:
    return [[("__name__", "up"), ("job", f"api-{i}")] for i in range(count)]


NEW = [("__name__", "http_requests_total"), ("code", "200"), ("instance", "10.0.0.1:9100"), ("path", "/ä")]
MAX_ALLOCATIONS = 5_000  # a decode of these small requests makes far fewer


def _v1(label_sets: list[list[tuple[str, str]]]) -> bytes:
    request = remote_v1_pb2.WriteRequest()
    for pairs in label_sets:
        series = request.timeseries.add()
        for name, value in pairs:
            series.labels.add(name=name, value=value)
        for i in range(3):
            series.samples.add(value=float(i), timestamp=1_700_000_000_000 + i)
    return request.SerializeToString()


def _v2(label_sets: list[list[tuple[str, str]]]) -> bytes:
    request = remote_v2_pb2.Request(symbols=[""])
    for pairs in label_sets:
        series = request.timeseries.add()
        for text in (text for pair in pairs for text in pair):
            if text not in request.symbols:
                request.symbols.append(text)
            series.labels_refs.append(list(request.symbols).index(text))
        for i in range(3):
            series.samples.add(value=float(i), timestamp=1_700_000_000_000 + i, start_timestamp=1)
    return request.SerializeToString()


def _decode(protocol: Protocol, payload: bytes, table: SeriesTable) -> dict:
    decoder = _wire.decode_v1 if protocol is Protocol.V1 else _wire.decode_v2
    return decoder(payload, table.slots, table.names, table.labels, table.heads, False, 0)


def _entries(table: SeriesTable) -> list[tuple[bytes, str, tuple, bytes]]:
    """The table as (key, name, labels, head) per slot, after checking its four containers agree."""
    n = len(table.names)
    assert len(table.labels) == len(table.heads) == len(table.slots) == n
    assert sorted(table.slots.values()) == list(range(n))
    by_slot = {slot: key for key, slot in table.slots.items()}
    return [(by_slot[i], table.names[i], table.labels[i], table.heads[i]) for i in range(n)]


# A list's append or a dict's insert allocates only when it is full: 4 known series fill the lists (they grow
# to 4, 8, 16 slots), 5 fill the dict (5 usable of 8), so the append or the insert after the others fails.
@pytest.mark.parametrize("known", [1, 4, 5])
@pytest.mark.parametrize("protocol", [Protocol.V1, Protocol.V2])
def test_a_failed_allocation_anywhere_is_a_memory_error_and_the_table_stays_whole(protocol: Protocol, known: int):
    encode = _v1 if protocol is Protocol.V1 else _v2
    seed, payload = encode(_known(known)), encode([*_known(known), NEW])
    complete = SeriesTable()
    _decode(protocol, seed, complete)
    before = _entries(complete)
    _decode(protocol, payload, complete)
    after = _entries(complete)
    assert len(after) == len(before) + 1

    failures = 0
    for nth in range(MAX_ALLOCATIONS):
        table = SeriesTable()
        _decode(protocol, seed, table)
        _testcapi.set_nomemory(nth, nth + 1)  # only the nth allocation from here on fails
        try:
            _decode(protocol, payload, table)
        except MemoryError:
            failures += 1
        else:
            break
        finally:
            _testcapi.remove_mem_hooks()
        assert _entries(table) in (before, after), f"allocation {nth}: the table was left half-updated"
    else:
        pytest.fail(f"the decode never succeeded within {MAX_ALLOCATIONS} allocations")
    assert _entries(table) == after
    assert failures > 10  # the walk, the new series' strings and the table's appends were all reached


@pytest.mark.parametrize("known", [1, 4, 5])
@pytest.mark.parametrize("protocol", [Protocol.V1, Protocol.V2])
def test_a_failed_allocation_in_the_one_walk_is_a_memory_error_and_the_known_set_stays_whole(
        protocol: Protocol, known: int):
    """The receiver's validate-only walk: a failed allocation is a MemoryError and leaves the known label sets
    as they were; the walk that succeeds returns the one new label set as fresh."""
    validate = _wire.validate_v1 if protocol is Protocol.V1 else _wire.validate_v2
    encode = _v1 if protocol is Protocol.V1 else _v2
    seed, payload = encode(_known(known)), encode([*_known(known), NEW])
    before = validate(seed, set(), False)["fresh"]
    assert len(before) == known
    new = validate(payload, set(before), False)["fresh"]
    assert len(new) == 1

    failures = 0
    for nth in range(MAX_ALLOCATIONS):
        keys = set(before)
        _testcapi.set_nomemory(nth, nth + 1)
        try:
            found = validate(payload, keys, False)
        except MemoryError:
            failures += 1
        else:
            break
        finally:
            _testcapi.remove_mem_hooks()
        assert keys == before, f"allocation {nth}: the known set changed"
    else:
        pytest.fail(f"the walk never succeeded within {MAX_ALLOCATIONS} allocations")
    assert (keys, found["fresh"], found["error"]) == (before, new, None)
    assert failures > 3  # the walk's buffers, the new key, the fresh set and the result were reached
