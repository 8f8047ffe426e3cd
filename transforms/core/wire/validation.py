"""What every layer says about a request's validation: which names rule applies, and what a request carries.

The rules themselves (remote-write 1.0 and 2.0 MUSTs: a valid `__name__`, label names valid, unique and sorted;
2.0 `symbols[0]` empty, references in range and in pairs, samples or histograms but not both) are applied by the
compiled decoder in one pass (transforms/core/wire/_wire_decode*.c, through transforms.core.wire.batch.decode).
Their Python statement over upb messages, the decoder's test oracle, is tests/reference/validation.py.
"""

from __future__ import annotations

import dataclasses
import enum


class NameValidation(enum.StrEnum):
    """Which names are valid: Prometheus 2.x's legacy charset, or any non-empty UTF-8 (Prometheus 3)."""

    LEGACY = "legacy"
    UTF8 = "utf8"


@dataclasses.dataclass(frozen=True)
class Counts:
    """What a request carries; published as message attributes and metrics."""

    series: int = 0
    samples: int = 0
    histograms: int = 0
    exemplars: int = 0
    metadata: int = 0
