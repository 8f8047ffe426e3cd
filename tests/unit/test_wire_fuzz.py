"""A bounded slice of `make fuzz`: 20,000 mutated bodies through the compiled decode + validate, each
accepted or refused with a documented client error (400/413), none slow (tools/fuzz_wire.py)."""

from __future__ import annotations

from tools import fuzz_wire


def test_twenty_thousand_mutated_bodies_are_accepted_or_refused_cleanly():
    outcomes = fuzz_wire.run(20_000, seed=20)
    assert outcomes["accepted"] + outcomes["400"] + outcomes["413"] == 20_000
    assert min(outcomes["accepted"], outcomes["400"], outcomes["413"]) > 0  # every outcome was reached
