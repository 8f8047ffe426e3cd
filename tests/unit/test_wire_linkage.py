"""The compiled module's linkage and file graph (docs/compiled-core.md): the shared object exports only
PyInit__wire; each C file is compiled on its own and its symbols say which file calls which: a function
no other file calls must be static, and the calls between files form a DAG (no two files call each other)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

from transforms.core.wire import _wire

ROOT = Path(__file__).resolve().parents[2]
WIRE_DIR = ROOT / "transforms" / "core" / "wire"
MODULE_INIT = "PyInit__wire"

pytestmark = pytest.mark.skipif(shutil.which("nm") is None or shutil.which("gcc") is None,
                                reason="needs binutils' nm and gcc")


def _symbols(path: Path, *flags: str) -> set[str]:
    listing = subprocess.run(["nm", *flags, str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in listing.splitlines() if line.strip()}


def _setup_list(name: str) -> list[str]:
    found = re.search(rf"{name} = [(\[]([^)\]]*)[)\]]", (ROOT / "setup.py").read_text())
    assert found, f"setup.py has no {name}"
    return re.findall(r'"([^"]*)"', found.group(1))


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each source of setup.py's WIRE_PARTS compiled alone, with setup.py's flags: file name -> object."""
    out = tmp_path_factory.mktemp("wire-objects")
    flags = [flag for flag in _setup_list("WIRE_CFLAGS") if not flag.startswith("-O")] + ["-O0"]
    compiled = {}
    for part in _setup_list("WIRE_PARTS"):
        source = WIRE_DIR / f"_wire{part}.c"
        target = out / f"{source.stem}.o"
        subprocess.run(["gcc", *flags, "-fPIC", f"-I{sysconfig.get_paths()['include']}", "-c", str(source),
                        "-o", str(target)], check=True, capture_output=True)
        compiled[source.name] = target
    return compiled


def test_the_shared_object_exports_only_the_module_init():
    assert _symbols(Path(_wire.__file__), "-D", "--defined-only") == {MODULE_INIT}


def _graph(objects: dict[str, Path]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    defined = {name: _symbols(obj, "-g", "--defined-only") for name, obj in objects.items()}
    undefined = {name: _symbols(obj, "-u") for name, obj in objects.items()}
    owner = {symbol: name for name, symbols in defined.items() for symbol in symbols}
    calls = {name: {owner[s] for s in undefined[name] if s in owner and owner[s] != name} for name in objects}
    return defined, calls


def test_a_function_no_other_file_uses_is_static(objects: dict[str, Path]):
    defined, _ = _graph(objects)
    used_elsewhere = {s for name, obj in objects.items() for s in _symbols(obj, "-u")}
    file_local = {name: sorted(symbols - used_elsewhere - {MODULE_INIT}) for name, symbols in defined.items()}
    assert {name: symbols for name, symbols in file_local.items() if symbols} == {}


def test_the_files_call_each_other_as_a_dag(objects: dict[str, Path]):
    _, calls = _graph(objects)
    try:
        order = list(TopologicalSorter(calls).static_order())
    except CycleError as exc:
        pytest.fail(f"C files call each other in a cycle: {exc.args[1]}")
    # the layers _wire_decode.h describes: neither walker calls the other; both sit on the common file
    assert "_wire_decode_v2.c" not in calls["_wire_decode_v1.c"]
    assert "_wire_decode_v1.c" not in calls["_wire_decode_v2.c"]
    assert {"_wire_decode_v1.c", "_wire_decode_v2.c"} <= calls["_wire_decode.c"]
    assert "_wire_decode_common.c" in calls["_wire_decode_v1.c"] & calls["_wire_decode_v2.c"]
    assert order.index("_wire_series.c") < order.index("_wire_decode_common.c") < order.index("_wire_decode.c")


def test_a_big_endian_target_is_refused_at_compile_time(tmp_path: Path):
    """The guard in _wire.h, seen by compiling a file with the byte-order macro set as a big-endian target's."""
    built = subprocess.run(["gcc", "-std=c11", "-fsyntax-only", "-Wno-builtin-macro-redefined",
                            "-U__BYTE_ORDER__", "-D__BYTE_ORDER__=__ORDER_BIG_ENDIAN__",
                            f"-I{sysconfig.get_paths()['include']}", str(WIRE_DIR / "_wire_scan.c")],
                           capture_output=True, text=True, cwd=tmp_path)
    assert built.returncode != 0
    assert "reads protobuf fixed-width fields and its columns as little-endian" in built.stderr
