"""The dependency rules of docs/architecture.md ("Layers and what may import what"), checked on the source.

Production code is every module under receiver/, reader/, pipeline/, tools/, bench/ and transforms/
(generated *_pb2.py aside; tests/ is not checked). Imports count at any depth, function-local ones too.
Four kinds of rule: which layer may import which (`LAYER_RULES`), no module reaches into another
project module's underscore names, the core does no file or network I/O, and the core owns no runtime
(threads, pools, sleeps, clocks: `runtime_violations`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRANSFORMS = ROOT / "transforms"
PROJECT = ("receiver", "reader", "pipeline", "tools", "bench", "transforms")
DEV_ONLY = ("tools", "bench", "tests")  # no service code depends on these
# Libraries of the edges: the core stays importable and testable without any of them.
EDGE_LIBRARIES = ("apache_beam", "flask", "werkzeug", "gunicorn", "requests", "urllib3", "google.cloud",
                  "google.api_core", "google.auth", "boto3", "botocore", "grpc")
# Modules whose use is file or network I/O (urllib.parse, io.BytesIO and gzip.compress are pure and allowed).
IO_MODULES = ("os", "pathlib", "shutil", "tempfile", "glob", "fcntl", "mmap", "socket", "ssl", "selectors",
              "asyncio", "subprocess", "http.client", "http.server", "urllib.request", "urllib.error",
              "pyarrow.fs", "pyarrow.dataset", "fsspec")
# Calls that open, read or write files whatever object they are called on (builtin open, gzip.open, Path's).
IO_CALLS = frozenset({"open", "FileIO", "read_text", "write_text", "read_bytes", "write_bytes", "unlink", "mkdir",
                      "rmdir", "touch", "iterdir", "rglob"})
# The runtime stays out of the core: thread pools, processes, sleeping, waiting and reading clocks belong to
# the drivers in transforms/io and the runners (the sink's retry loop is transforms/io/sink_driver.py). The
# core is given its clock (`clock=`, `now=`) and is called from threads, so a lock around shared counters
# and caches is all it may take from threading: Lock and RLock, held for a few statements, never waited on.
RUNTIME_MODULES = ("concurrent", "multiprocessing", "sched", "time", "queue", "_thread")
THREADING_ALLOWED = frozenset({"Lock", "RLock"})
CLOCK_CALLS = frozenset({"now", "utcnow", "today", "sleep", "monotonic", "perf_counter", "process_time"})
# pyarrow.parquet entry points and which argument is the file: in the core it must be an in-memory buffer.
PARQUET_FILE_ARG = {"read_table": 0, "write_table": 1, "ParquetFile": 0, "ParquetWriter": 0, "read_metadata": 0,
                    "read_schema": 0, "ParquetDataset": 0}
BUFFERS = frozenset({"BytesIO", "BufferReader", "BufferOutputStream", "py_buffer"})

# (where, what it must not import): every rule whose `where` is the module or a package above it applies.
LAYER_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("transforms.core", (*EDGE_LIBRARIES, *IO_MODULES, "transforms.io", "transforms.beam", "receiver", "reader",
                         "pipeline", *DEV_ONLY)),
    # inside the core: wire at the bottom; archive and sink beside each other; restore and read on top
    ("transforms.core.wire", ("transforms.core.archive", "transforms.core.sink", "transforms.core.restore",
                              "transforms.core.read")),
    ("transforms.core.archive", ("transforms.core.sink", "transforms.core.restore", "transforms.core.read")),
    ("transforms.core.sink", ("transforms.core.archive", "transforms.core.restore", "transforms.core.read")),
    ("transforms.core.restore", ("transforms.core.sink", "transforms.core.read")),
    ("transforms.core.read", ("transforms.core.sink", "transforms.core.restore")),
    ("transforms.io", ("transforms.beam", "pipeline", "receiver", "reader", *DEV_ONLY)),
    ("transforms.beam", ("pipeline", "receiver", "reader", *DEV_ONLY)),
    ("receiver", ("apache_beam", "transforms.beam", "pipeline", *DEV_ONLY)),
    ("reader", ("apache_beam", "transforms.beam", "pipeline", *DEV_ONLY)),
    ("pipeline", ("receiver", "reader", *DEV_ONLY)),
)
# The compiled module is the wire package's own: everyone else goes through its typed fronts
# (prescan, batch, bodies).
WIRE_PACKAGE = "transforms.core.wire"
COMPILED = "transforms.core.wire._wire"

# Known violations in files another change owns today; each entry names the file and what it must become.
ALLOWED = {
    # transforms/core/archive/lines.py is the compiled archive lines' front itself but lives in archive/:
    # it moves into the wire package (or gets a typed front there) when that file is free to change.
    ("transforms.core.archive.lines", COMPILED),
}


@dataclass(frozen=True)
class Imported:
    module: str  # `import module`, or module.name for `from module import name`
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def production_modules() -> list[Path]:
    return sorted(p for top in PROJECT for p in (ROOT / top).rglob("*.py") if not p.name.endswith("_pb2.py"))


def imports(tree: ast.AST, name: str) -> list[Imported]:
    """Every import of a module's source, at any depth; relative ones resolved against `name` (the module's
    dotted name; a package's __init__ counts as a module inside it, which is what its relative imports mean)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Imported(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                base = ".".join([*parts[: len(parts) - node.level], *([base] if base else [])])
            found += [Imported(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def module_of(path: Path) -> str:
    """What relative imports in this file resolve against: a package's __init__ is `package.__init__`."""
    name = module_name(path)
    return f"{name}.__init__" if path.name == "__init__.py" else name


def matches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def forbidden_for(name: str) -> tuple[str, ...]:
    return tuple(f for where, banned in LAYER_RULES if matches(name, (where,)) for f in banned)


def layer_violations(source: str, name: str) -> list[str]:
    banned = forbidden_for(name)
    home = name.removesuffix(".__init__")
    return sorted({f"line {i.line}: {i.module}" for i in imports(ast.parse(source), name)
                   if matches(i.module, banned) and (home, i.module) not in ALLOWED})


def private_violations(source: str, name: str) -> list[str]:
    """Underscore names of another project module: imported, or reached as an attribute of a name imported
    from one (`module._name`, `Class._name`). Only the wire package may import the compiled module."""
    tree = ast.parse(source)
    home = name.removesuffix(".__init__")
    bad = []
    for i in imports(tree, name):
        parts = i.module.split(".")
        if parts[0] not in PROJECT or not any(p.startswith("_") and not p.startswith("__") for p in parts):
            continue
        if i.module == COMPILED and matches(home, (WIRE_PACKAGE,)):
            continue
        if (home, i.module) not in ALLOWED:
            bad.append(f"line {i.line}: {i.module}")
    bound = set()  # names this module bound to something of the project's
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.split(".")[0] in PROJECT}
        elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in PROJECT):
            bound |= {a.asname or a.name for a in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                bad.append(f"line {node.lineno}: {ast.unparse(node)}")
    return bad


def io_violations(source: str) -> list[str]:
    """File and network I/O in a core module: I/O calls, and Parquet reads/writes of anything but a buffer."""
    tree = ast.parse(source)
    parquet = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names
               if a.name == "pyarrow.parquet" and a.asname} | {
        a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        and node.module == "pyarrow" for a in node.names if a.name == "parquet"}
    buffers = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign) and _is_buffer(node.value)
               for target in node.targets if isinstance(target, ast.Name)}
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if called in IO_CALLS:
            bad.append(f"line {node.lineno}: {ast.unparse(func)}()")
        elif (isinstance(func, ast.Attribute) and called in PARQUET_FILE_ARG and isinstance(func.value, ast.Name)
              and func.value.id in parquet):
            where = node.args[PARQUET_FILE_ARG[called]] if len(node.args) > PARQUET_FILE_ARG[called] else None
            if not (_is_buffer(where) or isinstance(where, ast.Name) and where.id in buffers):
                bad.append(f"line {node.lineno}: {ast.unparse(func)}() on something that is not a buffer")
    return bad


def runtime_violations(source: str) -> list[str]:
    """Threads, pools, sleeps and clocks in a core module (see RUNTIME_MODULES)."""
    tree = ast.parse(source)
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [f"line {node.lineno}: import {a.name}" for a in node.names
                    if matches(a.name, RUNTIME_MODULES)]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            module = node.module or ""
            if matches(module, RUNTIME_MODULES):
                bad.append(f"line {node.lineno}: from {module} import ...")
            elif module == "threading":
                bad += [f"line {node.lineno}: threading.{a.name}" for a in node.names
                        if a.name not in THREADING_ALLOWED]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "threading" and node.attr not in THREADING_ALLOWED:
                bad.append(f"line {node.lineno}: threading.{node.attr}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CLOCK_CALLS:
            bad.append(f"line {node.lineno}: {ast.unparse(node.func)}()")
    return bad


def _is_buffer(node: ast.AST | None) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else "") in BUFFERS


def ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


MODULES = production_modules()
CORE = [p for p in MODULES if module_name(p).startswith("transforms.core")]


def test_transforms_holds_only_the_three_layers() -> None:
    top = {p.name for p in TRANSFORMS.iterdir() if not p.name.startswith((".", "__"))}
    assert top == {"core", "io", "beam"}, "transforms/ is core/ (pure), io/ (edges) and beam/ (wrappers)"


def test_there_is_a_tree_to_check() -> None:
    names = {module_name(p) for p in MODULES}
    assert {"transforms.core.wire.codec", "transforms.io.pubsub", "transforms.beam.sinks", "receiver.app",
            "reader.app", "pipeline.launcher", "tools.services", "bench.load"} <= names
    ruled = [n for n in names if n.split(".")[0] in ("receiver", "reader", "pipeline")
             or n.startswith(("transforms.core", "transforms.io", "transforms.beam"))]
    assert len(ruled) > 80 and all(forbidden_for(n) for n in ruled)


@pytest.mark.parametrize(("source", "name"), [
    ("import apache_beam as beam", "transforms.core.x"),
    ("def f():\n    from google.cloud import storage", "transforms.core.x"),
    ("from transforms.io.files import write_atomically", "transforms.core.x"),
    ("from ...io import files", "transforms.core.sink.x"),  # relative: transforms.io
    ("import boto3", "transforms.core.x"),
    ("from urllib.request import urlopen", "transforms.core.x"),
    ("import os", "transforms.core.x"),
    ("from pipeline.options import X", "transforms.io.x"),
    ("from transforms.beam.archive import X", "transforms.io.x"),
    ("from receiver.config import X", "transforms.beam.x"),
    ("import apache_beam", "receiver.x"),
    ("from transforms.beam import sinks", "reader.x"),
    ("from pipeline import graph", "reader.x"),
    ("from tools import services", "pipeline.x"),
    ("from transforms.core.sink.columns import label_bytes", "transforms.core.restore.x"),
    ("from transforms.core.archive import lines", "transforms.core.wire.x"),
])
def test_the_layer_checker_catches(source: str, name: str) -> None:
    assert layer_violations(source, name), source


@pytest.mark.parametrize(("source", "name"), [
    ("from urllib.parse import urlsplit", "transforms.core.x"),
    ("from google.protobuf import message", "transforms.core.x"),
    ("import requests_toolbelt", "transforms.core.x"),
    ("import apache_beam", "transforms.io.x"),
    ("from receiver.auth import Authenticator", "reader.x"),
    ("from pipeline.graph import build_streaming", "tools.x"),
    ("from tests.reference import parquet_records", "bench.x"),
])
def test_the_layer_checker_allows(source: str, name: str) -> None:
    assert not layer_violations(source, name), source


@pytest.mark.parametrize("path", MODULES, ids=ids(MODULES))
def test_imports_follow_the_layers(path: Path) -> None:
    bad = layer_violations(path.read_text(), module_of(path))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad} (docs/architecture.md: what may import what)"


def test_the_private_name_checker() -> None:
    for source in ("from transforms.beam.sinks import _SinkMetrics", "from transforms.core.wire import _wire",
                   "import transforms.core.wire._wire", "from transforms.core import protocol\nprotocol._TENANT",
                   "from transforms.core.wire.batch import Batch\nBatch._slots", "from . import _helpers",
                   "from transforms.core.sink import forwarder as f\nf.Forwarder._record"):
        assert private_violations(source, "pipeline.x"), source
    assert not private_violations("from transforms.core.wire import _wire", "transforms.core.wire.bodies")
    for source in ("import os\nos._exit(1)", "class A:\n    def f(self):\n        self._x = 1",
                   "from transforms.core import protocol\nprotocol.__name__"):
        assert not private_violations(source, "pipeline.x"), source


@pytest.mark.parametrize("path", MODULES, ids=ids(MODULES))
def test_no_module_reaches_into_another_modules_private_names(path: Path) -> None:
    bad = private_violations(path.read_text(), module_of(path))
    assert not bad, f"{path.relative_to(ROOT)} uses another module's private names: {bad} (make them public)"


def test_the_io_checker() -> None:
    for source in ("open('x')", "import gzip\ngzip.open('x')", "path.read_text()", "p.write_bytes(b'')",
                   "import pyarrow.parquet as pq\npq.read_table('f.parquet')",
                   "import pyarrow.parquet as pq\ndef f(t, where):\n    pq.write_table(t, where)"):
        assert io_violations(source), source
    for source in ("import io\nimport pyarrow.parquet as pq\nsink = io.BytesIO()\npq.write_table(t, sink)",
                   "import io\nimport pyarrow.parquet as pq\npq.read_table(io.BytesIO(b''))",
                   "import gzip\ngzip.decompress(b'')"):
        assert not io_violations(source), source


@pytest.mark.parametrize("path", CORE, ids=ids(CORE))
def test_core_does_no_io(path: Path) -> None:
    bad = io_violations(path.read_text())
    assert not bad, f"{path.relative_to(ROOT)}: {bad}: the core is pure (file and network I/O go in transforms/io)"


def test_the_runtime_checker() -> None:
    for source in ("from concurrent.futures import ThreadPoolExecutor", "import concurrent.futures", "import time",
                   "import threading\nthreading.Event()", "from threading import Thread", "import multiprocessing",
                   "from datetime import datetime\ndatetime.now()", "import threading\nthreading.Timer(1, f)",
                   "import queue"):
        assert runtime_violations(source), source
    for source in ("import threading\nlock = threading.Lock()", "from threading import Lock",
                   "from datetime import UTC, datetime\ndatetime.fromtimestamp(0, UTC)",
                   "def f(clock):\n    return clock().isoformat()"):
        assert not runtime_violations(source), source


@pytest.mark.parametrize("path", CORE, ids=ids(CORE))
def test_core_owns_no_runtime(path: Path) -> None:
    bad = runtime_violations(path.read_text())
    assert not bad, (f"{path.relative_to(ROOT)}: {bad}: the core has no threads, sleeps or clocks (drivers in "
                     f"transforms/io own them; the core is given a clock)")


def loaded_after_importing(packages: tuple[str, ...]) -> set[str]:
    """Every module loaded by importing each production module of these packages, in a fresh interpreter."""
    names = [module_name(p) for p in MODULES if matches(module_name(p), packages)
             and not module_name(p).endswith("__main__")]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "print('\\n'.join(sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=True)
    return set(done.stdout.split())


def test_the_core_loads_no_edge_library_even_indirectly() -> None:
    loaded = loaded_after_importing(("transforms.core",))
    # google.cloud itself is a namespace package (google_crc32c shares it); its packages are the clients
    edges = sorted(m for m in loaded if matches(m, tuple(e for e in EDGE_LIBRARIES if e != "google.cloud"))
                   or m.startswith("google.cloud."))
    assert "transforms.core.wire.codec" in loaded
    assert not edges, f"importing transforms/core loads {edges}"


def test_the_services_load_no_beam_even_indirectly() -> None:
    loaded = loaded_after_importing(("receiver", "reader"))
    assert "receiver.app" in loaded and "reader.app" in loaded
    assert not sorted(m for m in loaded if matches(m, ("apache_beam", "pipeline", "transforms.beam")))


@pytest.mark.parametrize(("importer", "imported"), sorted(ALLOWED))
def test_every_allowance_is_still_needed(importer: str, imported: str) -> None:
    """Once the file an allowance names is fixed, the allowance goes (it must not hide a new violation)."""
    path = next(p for p in MODULES if module_name(p) == importer)
    assert imported in {i.module for i in imports(ast.parse(path.read_text()), module_of(path))}, (
        f"{importer} no longer imports {imported}: remove the entry from ALLOWED")


def test_beam_wrappers_list_their_public_transforms() -> None:
    import apache_beam as beam

    import transforms.beam as package
    from transforms.beam import archive, sinks

    for module in (package, archive, sinks):
        public = {name for name, value in vars(module).items()
                  if isinstance(value, type) and issubclass(value, beam.PTransform) and not name.startswith("_")
                  and value.__module__.startswith("transforms.")}
        assert public <= set(module.__all__), f"{module.__name__}.__all__ misses {public - set(module.__all__)}"
