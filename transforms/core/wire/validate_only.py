"""Typed front of the compiled decoder's validate-only walk (`_wire.validate_v1`/`validate_v2`): the receiver's
one walk per request.

The receiver needs a request's verdict and counts, not its columns: the walk applies the request limits as it
goes and every rule the full decode applies (same messages), and builds nothing but the keys of the label
sets that passed, which later requests skip (`KnownLabelSets`). Its outcome is the one the pre-scan followed
by the full decode gives (tests/unit/test_wire_validate_only.py): the pre-scan's errors differ in wording and
order from the decoder's, so a refused request is looked at again by the pre-scan, to be refused with the
error the pre-scan names first. Only refused requests pay that second walk.
"""

from __future__ import annotations

from transforms.core.errors import InvalidPayload
from transforms.core.protocol import Protocol
from transforms.core.wire import _wire, prescan
from transforms.core.wire.validation import Counts, NameValidation


class KnownLabelSets:
    """Label-set keys (bytes) already validated under one name rule: the receiver's series table, without the
    names, labels and archive heads the pipeline's needs. Replaced by an empty set once `limit` keys are held."""

    def __init__(self, names: NameValidation = NameValidation.UTF8, limit: int = 200_000) -> None:
        self.validation = names
        self.limit = limit
        self.keys: set[bytes] = set()

    def __len__(self) -> int:
        return len(self.keys)

    def make_room(self) -> None:
        if len(self.keys) >= self.limit:
            self.keys = set()


def validate(payload: bytes, protocol: Protocol, known: KnownLabelSets, limits: prescan.RequestLimits) -> Counts:
    """Validate an uncompressed payload in one walk, under `limits`; raises InvalidPayload (400) or
    PayloadTooLarge (413) exactly as prescan.check followed by batch.decode would."""
    known.make_room()
    v1 = protocol is Protocol.V1
    validator = _wire.validate_v1 if v1 else _wire.validate_v2
    try:
        # 2.0 counts label references, two per label pair (as the pre-scan)
        found = validator(payload, known.keys, known.validation is NameValidation.LEGACY,
                          max_series=limits.series, max_samples=limits.samples,
                          max_labels=limits.labels if v1 else 2 * limits.labels, max_symbols=limits.symbols,
                          max_buckets=limits.buckets)
    except ValueError as exc:
        prescan.check(payload, protocol, limits)  # malformed bytes or a limit the pre-scan meets first
        raise InvalidPayload(str(exc)) from exc
    wire = prescan.WireCounts(
        series=found["series"], samples=found["samples"], histograms=found["histograms"],
        exemplars=found["exemplars"], labels=found["labels"] if v1 else (found["labels"] + 1) // 2,
        symbols=found["symbols"], metadata=found["metadata"], buckets=found["buckets"])
    if not found["complete"]:  # stopped past a limit: the pre-scan's error, whichever it meets first
        prescan.check(payload, protocol, limits)
    prescan.refuse_over(wire, limits)  # a complete walk over a limit (a stopped one always is)
    # within the limits: its new label sets are remembered (even if a later series broke a rule, as the
    # pipeline's table does); a request refused for its size leaves nothing behind
    known.keys |= found["fresh"]
    if found["error"] is not None:
        raise InvalidPayload(found["error"])
    return Counts(series=wire.series, samples=wire.samples, histograms=wire.histograms, exemplars=wire.exemplars,
                  metadata=wire.metadata)
