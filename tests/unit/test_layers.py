"""The dependency rule, checked on the source: the pure core imports no Beam, Flask, requests or
google.cloud, and imports point one way (edges -> io -> core)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRANSFORMS = ROOT / "transforms"
CORE = TRANSFORMS / "core"  # transforms/io: I/O edges; transforms/beam: Beam wrappers
FORBIDDEN_IN_CORE = ("apache_beam", "flask", "werkzeug", "requests", "google.cloud", "google.api_core")


def imported_modules(source: str) -> set[str]:
    """Every module a source imports, at any depth (function-local imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def violations(source: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imported_modules(source) if any(m == f or m.startswith(f + ".") for f in forbidden))


def core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_transforms_holds_only_the_three_layers() -> None:
    top = {p.name for p in TRANSFORMS.iterdir() if not p.name.startswith((".", "__"))}
    assert top == {"core", "io", "beam"}, "transforms/ is core/ (pure), io/ (edges) and beam/ (wrappers)"


def test_the_checker_catches_each_forbidden_import() -> None:
    for source in ("import apache_beam as beam", "from flask import Flask", "import requests",
                   "from google.cloud import pubsub_v1", "def f():\n    import google.cloud.storage",
                   "from transforms.io.files import write_atomically"):
        assert violations(source, (*FORBIDDEN_IN_CORE, "transforms.io", "transforms.beam")), source
    assert violations("import requests_toolbelt", FORBIDDEN_IN_CORE) == []
    assert violations("from google.protobuf import message", FORBIDDEN_IN_CORE) == []


def test_there_is_a_core_to_check() -> None:
    names = {p.name for p in core_modules()}
    assert {"codec.py", "validation.py", "metric_to_log.py", "forwarder.py", "config.py"} <= names


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_is_pure(path: Path) -> None:
    bad = violations(path.read_text(), (*FORBIDDEN_IN_CORE, "transforms.io", "transforms.beam"))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: the core stays pure (move the I/O to transforms/io)"


@pytest.mark.parametrize("path", sorted((TRANSFORMS / "io").glob("*.py")), ids=lambda p: p.name)
def test_io_edges_import_no_beam_wrappers(path: Path) -> None:
    assert not violations(path.read_text(), ("transforms.beam",)), "imports point one way: beam -> io -> core"


def test_beam_wrappers_list_their_public_transforms() -> None:
    import apache_beam as beam

    import transforms.beam as package
    from transforms.beam import archive, sinks

    for module in (package, archive, sinks):
        public = {name for name, value in vars(module).items()
                  if isinstance(value, type) and issubclass(value, beam.PTransform) and not name.startswith("_")
                  and value.__module__.startswith("transforms.")}
        assert public <= set(module.__all__), f"{module.__name__}.__all__ misses {public - set(module.__all__)}"
