"""Protocol constants and the timestamp text are defined once, in transforms/core/protocol.py.

The stale marker's and Prometheus' NaN bits, the native-histogram reset hints and `format_ms` were
repeated across modules once; this fails if a copy reappears anywhere in production Python (tests aside).
The compiled core keeps its own #define of each NaN (C cannot import Python), once per C file set and
equal to protocol.py's value.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from transforms.core import protocol
from transforms.core.wire.proto import remote_v1_pb2, remote_v2_pb2

ROOT = Path(__file__).resolve().parents[2]
HOME = ROOT / "transforms" / "core" / "protocol.py"
PRODUCTION = sorted(p for top in ("receiver", "reader", "pipeline", "tools", "bench", "transforms")
                    for p in (ROOT / top).rglob("*.py") if not p.name.endswith("_pb2.py") and p != HOME)
WIRE = ROOT / "transforms" / "core" / "wire"
BITS = {"STALE_NAN_BITS": protocol.STALE_NAN_BITS, "PROMETHEUS_NAN_BITS": protocol.PROMETHEUS_NAN_BITS}
# Where each C #define lives. It belongs in _wire.h (the header every C file includes); _wire_lines.c holds
# it because transforms/core/wire/*.c is another change's today: move it to _wire.h, then update this map.
C_HOME = {"STALE_NAN_BITS": "_wire_lines.c", "PROMETHEUS_NAN_BITS": "_wire_lines.c"}
# How the timestamp text gets spelled out by hand (format_ms replaces each).
TIMESTAMP_FORMATTING = re.compile(r'isoformat\(timespec=|strftime\("%Y-%m-%dT|:02d}:\{')


def copies(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and node.value in BITS.values():
            found.append(f"line {node.lineno}: the NaN bits {node.value:#x}")
        elif isinstance(node, ast.Tuple | ast.List | ast.Set | ast.Dict):
            items = node.keys + node.values if isinstance(node, ast.Dict) else node.elts
            strings = {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}
            if {"unknown", "yes", "no"} <= strings:
                found.append(f"line {node.lineno}: a table of reset hints")
        elif isinstance(node, ast.FunctionDef) and node.name == "format_ms":
            found.append(f"line {node.lineno}: def format_ms")
    return found


def test_the_checker_finds_each_kind_of_copy() -> None:
    for source in ("BITS = 0x7FF0000000000002", "x = 9218868437227405314", "NAN = 0x7ff8000000000001",
                   'HINTS = {0: "unknown", 1: "yes", 2: "no", 3: "gauge"}', 'H = ("unknown", "yes", "no", "gauge")',
                   "def format_ms(ms):\n    return str(ms)"):
        assert copies(ast.parse(source)), source
    assert not copies(ast.parse('KINDS = ("counter", "gauge")\nMASK = 0x7FF0000000000000'))
    assert TIMESTAMP_FORMATTING.search('now.isoformat(timespec="milliseconds")')
    assert TIMESTAMP_FORMATTING.search('f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}"')
    assert not TIMESTAMP_FORMATTING.search('f"{t.year:04d}-{t.month:02d}-{t.day:02d}"')  # a partition's date
    assert not TIMESTAMP_FORMATTING.search('strftime("%Y%m%dT%H%M%SZ")')  # a file name, not the timestamp text


@pytest.mark.parametrize("path", PRODUCTION, ids=[str(p.relative_to(ROOT)) for p in PRODUCTION])
def test_no_copy_outside_protocol(path: Path) -> None:
    source = path.read_text()
    found = copies(ast.parse(source)) + [f"line {source.count(chr(10), 0, m.start()) + 1}: {m.group()}"
                                         for m in TIMESTAMP_FORMATTING.finditer(source)]
    assert not found, f"{path.relative_to(ROOT)}: {found}: import it from transforms.core.protocol"


def test_the_reset_hints_are_the_specs_numbering() -> None:
    v1 = remote_v1_pb2.Histogram.ResetHint
    assert protocol.RESET_HINT_NAMES == tuple(v1.Name(i).lower() for i in range(len(v1.keys())))
    v2 = remote_v2_pb2.Histogram.ResetHint  # 0 is RESET_HINT_UNSPECIFIED there, archived as "unknown"
    assert protocol.RESET_HINT_NAMES[1:] == tuple(v2.Name(i).removeprefix("RESET_HINT_").lower()
                                                  for i in range(1, len(v2.keys())))
    assert protocol.RESET_HINTS == {"unknown": 0, "yes": 1, "no": 2, "gauge": 3}


def test_format_ms_is_the_archive_timestamp_text() -> None:
    assert protocol.format_ms(0) == "1970-01-01T00:00:00.000Z"
    assert protocol.format_ms(1_764_547_200_123) == "2025-12-01T00:00:00.123Z"
    assert protocol.format_ms(-1) == "1969-12-31T23:59:59.999Z"  # floor division: before the epoch too
    assert protocol.format_ms(-62_135_596_800_000) == "0001-01-01T00:00:00.000Z"  # years padded to 4 digits


@pytest.mark.parametrize("name", sorted(BITS))
def test_the_compiled_core_defines_each_nan_once_with_protocols_value(name: str) -> None:
    sources = sorted([*WIRE.glob("_wire*.c"), *WIRE.glob("_wire*.h")])
    defines = [(p.name, int(m.group(1), 16)) for p in sources
               for m in re.finditer(rf"^#define {name} (0x[0-9A-Fa-f]+)ULL$", p.read_text(), re.MULTILINE)]
    assert defines == [(C_HOME[name], BITS[name])]
    literal = re.compile(f"0x{BITS[name]:016x}", re.IGNORECASE)
    assert [p.name for p in sources for _ in literal.finditer(p.read_text())] == [C_HOME[name]]
