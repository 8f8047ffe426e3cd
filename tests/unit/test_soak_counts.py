"""make soak-streaming's sample bookkeeping: distinct samples and duplicates, archive lines and exported values."""

from __future__ import annotations

import numpy as np

from tools.soak_streaming import SERIES, SampleCounts


def test_counts_tell_lost_from_duplicated_samples():
    counts = SampleCounts(3)
    for request in range(3):
        for series in range(SERIES):
            counts.add(request, series)
    counts.add(1, 7)  # a duplicate line
    counts.add(5, 0)  # a request never published (the feeder's or a stray): not counted
    assert counts.distinct == 3 * SERIES and counts.duplicates == 1

    exported = SampleCounts(3)
    exported.add_values(4, np.array([0, 2, 2, 9]))  # series 4 holds requests 0 and 2 (twice); 9 is unknown
    assert exported.distinct == 2 and exported.duplicates == 1
