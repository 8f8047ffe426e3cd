"""`make test`'s slice of `make fuzz-wire`'s sanitized run (`python -m tools.fuzz_wire --sanitize`): the
compiled module rebuilt with AddressSanitizer and UndefinedBehaviorSanitizer, then 20,000 mutated bodies and
every failed-allocation path of the seed bodies run under them with leak detection on (tools/fuzz_wire.py).
Any out-of-bounds access, use after free, undefined behaviour or lost memory aborts the child, and the test
shows the sanitizer's report."""

from __future__ import annotations

import subprocess
import sysconfig
from pathlib import Path

import pytest

from tools import fuzz_wire


def _libasan() -> Path | None:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    try:
        found = subprocess.run([compiler, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout
    except OSError:
        return None
    path = Path(found.strip())
    return path if path.is_absolute() and path.exists() else None


@pytest.mark.skipif(_libasan() is None, reason="needs a C compiler with AddressSanitizer (libasan)")
def test_twenty_thousand_mutated_bodies_and_every_failed_allocation_under_asan_ubsan_and_leak_checks():
    result = fuzz_wire.run_under_sanitizers(20_000, seed=21, capture=True)
    report = f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-12000:]}"
    assert result.returncode == 0, report
    assert "20,000 mutated bodies" in result.stdout, report
    assert "decodes with one allocation failing: each a MemoryError" in result.stdout, report
    assert "LeakSanitizer: no memory lost" in result.stdout, report
