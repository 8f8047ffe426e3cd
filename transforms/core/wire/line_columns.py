"""Typed front of the compiled archive-line parser (transforms/core/wire/_wire_parse_lines.c).

The inverse of `format_lines`: the float-sample lines of a decompressed NDJSON archive file back into
columns, without a Python object per line. Only the exact shape the pipeline writes is taken; every other
line (native histograms, exemplars, anything hand-edited or foreign) is declined by position, for the
caller's json.loads path to read, so the result never depends on what the compiled parser accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from transforms.core.wire import _wire


class ParsedLines(NamedTuple):
    """`names`/`labels` per run (a distinct series head, in first-seen order); the arrays per taken line."""

    names: list[str]
    labels: list[list[tuple[str, str]]]  # tags in line order, __name__ not among them
    runs: np.ndarray  # int32 per sample: its run
    timestamps: np.ndarray  # int64 ms
    values: np.ndarray  # float64, exact (special strings decoded, NaN payloads kept)
    kinds: np.ndarray  # int8: 1 counter, 2 gauge
    starts: np.ndarray | None  # int64 ms (0: none); None when no line has one
    declined: np.ndarray  # int64 (k, 3): start, end (exclusive, before the newline) and samples taken before it


def parse(data: bytes, specials: Mapping[str, float]) -> ParsedLines:
    """Newline-separated lines -> columns. `specials` are the value strings that stand for exact floats
    (records.decode_value's table: "+Inf", "NaN", "StaleNaN", ...); "NaN:0x<16 hex digits>" is built in."""
    table = tuple((text.encode(), float(value)) for text, value in specials.items())
    names, labels, runs, stamps, values, kinds, starts, declined = _wire.parse_lines(data, table)
    return ParsedLines(names, labels, np.frombuffer(runs, np.int32), np.frombuffer(stamps, np.int64),
                       np.frombuffer(values, np.float64), np.frombuffer(kinds, np.int8),
                       None if starts is None else np.frombuffer(starts, np.int64),
                       np.frombuffer(declined, np.int64).reshape(-1, 3))
