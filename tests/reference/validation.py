"""Per-spec validation of upb-parsed remote-write messages, and the reference decode built on it.

The test oracle of the compiled decoder (transforms/core/wire/_wire_decode*.c): `decode_with_upb` (snappy,
the pre-scan, upb parse, these rules) must accept and refuse exactly what `codec.decode` does, with the same
counts and the same messages (tests/unit/test_wire_decode.py, tests/unit/test_codec.py). Nothing in
production runs it.

Rules (remote-write 1.0 and 2.0 MUSTs):
- every series has a `__name__` label with a valid metric name;
- label names are valid, unique and sorted lexicographically (byte order);
- 2.0: `symbols[0]` is "", every reference is in range, `labels_refs` come in pairs,
  and a series carries samples or histograms, not both and not neither.

Names already seen valid are remembered in a bounded set instead of re-running the regex.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from transforms.core.errors import InvalidPayload
from transforms.core.protocol import METRIC_NAME_LABEL, Protocol, ref_pairs
from transforms.core.wire import prescan, snappy_block
from transforms.core.wire.codec import WriteMessage, parse
from transforms.core.wire.proto import remote_v1_pb2, remote_v1_view_pb2, remote_v2_pb2
from transforms.core.wire.validation import Counts, NameValidation

_LEGACY_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_LEGACY_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_CACHE_LIMIT = 200_000


class _NameChecker:
    """Validates label and metric names, remembering the ones already seen valid."""

    def __init__(self, mode: NameValidation) -> None:
        self.mode = mode
        self._labels: set[str] = set()
        self._metrics: set[str] = set()

    def label(self, name: str, where: str) -> None:
        if name in self._labels:
            return
        if not name or (self.mode is NameValidation.LEGACY and not _LEGACY_LABEL_NAME.match(name)):
            raise InvalidPayload(f"{where}: invalid label name {name!r}")
        if len(self._labels) >= _CACHE_LIMIT:
            self._labels.clear()
        self._labels.add(name)

    def metric(self, name: str, where: str) -> None:
        if name in self._metrics:
            return
        if not name or (self.mode is NameValidation.LEGACY and not _LEGACY_METRIC_NAME.match(name)):
            raise InvalidPayload(f"{where}: invalid metric name {name!r}")
        if len(self._metrics) >= _CACHE_LIMIT:
            self._metrics.clear()
        self._metrics.add(name)


class ValidationCache:
    """What validation remembers between requests for one naming mode: names seen valid, and the
    packed counts of label sets (series keys) validated before. Owned by whoever validates many
    requests (the receiver's ingest, a DoFn's setup); without one, each call starts empty."""

    def __init__(self, names: NameValidation = NameValidation.UTF8) -> None:
        self.names = names
        self.checker = _NameChecker(names)
        self.series: dict[bytes, int] = {}


def _cache_for(names: NameValidation, cache: ValidationCache | None) -> ValidationCache:
    if cache is None:
        return ValidationCache(names)
    if cache.names is not names:
        raise ValueError(f"a {cache.names} validation cache cannot validate {names} names")
    return cache


def _check_label_pairs(pairs: Sequence[tuple[str, str]], where: str, checker: _NameChecker) -> None:
    """One series' labels: non-empty, sorted, unique, valid, with a valid __name__."""
    if not pairs:
        raise InvalidPayload(f"{where}: series has no labels")
    previous = None
    has_name = False
    for name, value in pairs:
        if previous is not None and name <= previous:
            if name == previous:
                raise InvalidPayload(f"{where}: duplicate label name {name!r}")
            raise InvalidPayload(f"{where}: label names not sorted ({previous!r} before {name!r})")
        checker.label(name, where)
        if name == METRIC_NAME_LABEL:
            checker.metric(value, where)
            has_name = True
        previous = name
    if not has_name:
        raise InvalidPayload(f"{where}: series has no {METRIC_NAME_LABEL} label")


def validate_v1(
    request: remote_v1_pb2.WriteRequest, names: NameValidation = NameValidation.UTF8,
    cache: ValidationCache | None = None,
) -> Counts:
    """Validate a 1.0 WriteRequest; return its counts or raise InvalidPayload (400)."""
    checker = _cache_for(names, cache).checker
    samples = histograms = exemplars = 0
    for index, series in enumerate(request.timeseries):
        _check_label_pairs([(lab.name, lab.value) for lab in series.labels], f"series {index}", checker)
        samples += len(series.samples)
        histograms += len(series.histograms)
        exemplars += len(series.exemplars)
    return Counts(
        series=len(request.timeseries),
        samples=samples,
        histograms=histograms,
        exemplars=exemplars,
        metadata=len(request.metadata),
    )


# Packed per-series counts: samples | exemplars << 32 | histograms << 64. A request of at most a
# few hundred MB cannot hold 2**32 of anything, so sums of packed values never carry over.
_SHIFT = 32
_MASK = (1 << _SHIFT) - 1
_serialize_key = remote_v1_view_pb2.SeriesKey.SerializeToString


def _validate_key(key: bytes, checker: _NameChecker, keys: list[bytes]) -> int:
    """Slow path for one unseen series key: validate its labels, return its packed counts."""
    series = remote_v1_view_pb2.SeriesKey.FromString(key)
    pairs = [(lab.name, lab.value) for lab in series.labels]
    try:
        _check_label_pairs(pairs, "series", checker)
    except InvalidPayload:
        _check_label_pairs(pairs, f"series {keys.index(key)}", checker)  # same error, with its index
        raise
    return len(series.samples) | len(series.exemplars) << _SHIFT | len(series.histograms) << 2 * _SHIFT


def validate_v1_payload(
    payload: bytes, request: remote_v1_pb2.WriteRequest, names: NameValidation = NameValidation.UTF8,
    owner: ValidationCache | None = None,
) -> tuple[Counts, list[bytes]]:
    """validate_v1, fast: series whose label set was validated before are not checked again.

    `request` is `payload` already parsed with the full schema (which is what proves the
    payload well-formed); the labels-only view just yields one bytes key per series, in C.
    Same rules and errors as validate_v1. Also returns the per-series keys (label-set bytes), which
    the pipeline's conversion uses to cache per-series work.
    """
    view = remote_v1_view_pb2.WriteRequestKeys.FromString(payload)
    view.DiscardUnknownFields()
    keys = list(map(_serialize_key, view.timeseries))
    owner = _cache_for(names, owner)
    cache, checker = owner.series, owner.checker
    missing = [key for key in dict.fromkeys(keys) if key not in cache]  # request order: first error wins
    if missing:
        fresh = {key: _validate_key(key, checker, keys) for key in missing}
        if len(cache) + len(fresh) > _CACHE_LIMIT:
            cache.clear()
        cache.update(fresh)
    packed = list(map(cache.get, keys))
    if None in packed:  # another thread cleared the cache meanwhile
        packed = [p if p is not None else _validate_key(k, checker, keys) for k, p in zip(keys, packed, strict=True)]
    total = sum(packed)
    counts = Counts(
        series=len(keys),
        samples=total & _MASK,
        exemplars=(total >> _SHIFT) & _MASK,
        histograms=total >> 2 * _SHIFT,
        metadata=len(request.metadata),
    )
    return counts, keys


def _resolve_refs(refs: Sequence[int], symbols: Sequence[str], where: str) -> list[tuple[str, str]]:
    """Turn a 2.0 labels_refs list into (name, value) pairs, checking every index."""
    if len(refs) % 2:
        raise InvalidPayload(f"{where}: labels_refs has odd length {len(refs)}")
    if refs and max(refs) >= len(symbols):
        raise InvalidPayload(
            f"{where}: symbol reference {max(refs)} out of range (symbols has {len(symbols)} entries)"
        )
    return ref_pairs(refs, symbols)


def validate_v2(request: remote_v2_pb2.Request, names: NameValidation = NameValidation.UTF8,
                cache: ValidationCache | None = None) -> Counts:
    """Validate a 2.0 Request; return its counts or raise InvalidPayload (400)."""
    checker = _cache_for(names, cache).checker
    symbols = list(request.symbols)
    if symbols and symbols[0] != "":
        raise InvalidPayload('symbols[0] must be the empty string ""')
    samples = histograms = exemplars = metadata = 0
    for index, series in enumerate(request.timeseries):
        where = f"series {index}"
        _check_label_pairs(_resolve_refs(series.labels_refs, symbols, where), where, checker)
        n_samples, n_histograms = len(series.samples), len(series.histograms)
        if n_samples and n_histograms:
            raise InvalidPayload(f"{where}: a series must not carry both samples and histograms")
        # Senders MUST send a sample or histogram, yet Prometheus 3 sends exemplar-only series and
        # its own receiver takes them; rejecting would drop the whole request for good.
        if not n_samples and not n_histograms and not series.exemplars:
            raise InvalidPayload(f"{where}: a series must carry at least one sample, histogram or exemplar")
        for exemplar in series.exemplars:
            _resolve_refs(exemplar.labels_refs, symbols, f"{where} exemplar")
        if series.HasField("metadata"):
            meta = series.metadata
            if max(meta.help_ref, meta.unit_ref) >= max(len(symbols), 1):
                raise InvalidPayload(f"{where}: metadata symbol reference out of range")
            metadata += 1
        samples += n_samples
        histograms += n_histograms
        exemplars += len(series.exemplars)
    return Counts(
        series=len(request.timeseries),
        samples=samples,
        histograms=histograms,
        exemplars=exemplars,
        metadata=metadata,
    )


def decode_with_upb(
    body: bytes,
    protocol: Protocol,
    max_uncompressed: int,
    names: NameValidation = NameValidation.UTF8,
    limits: prescan.RequestLimits | None = None,
    cache: ValidationCache | None = None,
) -> tuple[WriteMessage, Counts]:
    """The reference decode: upb parse + transforms.core.wire.validation (remembering in the caller's `cache`).
    The test oracle of `codec.decode`: same acceptance, counts and errors."""
    payload = snappy_block.decompress(body, max_uncompressed)
    if limits is not None:
        prescan.check(payload, protocol, limits)
    message = parse(payload, protocol)
    if protocol is Protocol.V1:
        counts, _ = validate_v1_payload(payload, message, names, cache)  # type: ignore[arg-type]
    else:
        counts = validate_v2(message, names, cache)  # type: ignore[arg-type]
    return message, counts
