"""The fault tests print what they measured; with FAULT_FIGURES set (tests/run_suite.sh sets it), those lines
are also appended to that file, so every `make test` ends with the figures of the faults it just ran."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def figures_to_report(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    yield
    printed = capsys.readouterr().out
    if request.config.getoption("capture") != "no":  # under -s it was shown as it was printed
        sys.stdout.write(printed)  # kept with the test's captured output
    report = os.environ.get("FAULT_FIGURES")
    if report and printed.strip():
        with open(report, "a", encoding="utf-8") as handle:
            handle.write(f"{request.node.nodeid}:{printed.rstrip()}\n")
