"""Label matchers with Prometheus' semantics: regexes anchored as `^(?:re)$`, a missing label reads as "".

Regexes are RE2's (google-re2), the syntax and linear-time engine Go's regexp (Prometheus') follows: what
Prometheus refuses (backreferences, lookaround) is refused here too, and no pattern can backtrack for ever.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import re2

from transforms.core.protocol import METRIC_NAME_LABEL

EQ, NEQ, RE, NRE = 0, 1, 2, 3  # prometheus.LabelMatcher.Type
_SYMBOLS = {EQ: "=", NEQ: "!=", RE: "=~", NRE: "!~"}


@dataclasses.dataclass(frozen=True)
class Matcher:
    kind: int
    name: str
    value: str
    pattern: Any = None  # a compiled re2 pattern

    def matches(self, value: str) -> bool:
        if self.kind == EQ:
            return value == self.value
        if self.kind == NEQ:
            return value != self.value
        assert self.pattern is not None
        # fullmatch anchors at both ends like Go's ^(?:re)$
        found = self.pattern.fullmatch(value) is not None
        return found if self.kind == RE else not found

    def __str__(self) -> str:
        return f'{self.name}{_SYMBOLS[self.kind]}"{self.value}"'


def make_matcher(kind: int, name: str, value: str) -> Matcher:
    if kind not in _SYMBOLS:
        raise ValueError(f"matcher on {name!r}: unknown type {kind} (0=EQ, 1=NEQ, 2=RE, 3=NRE)")
    if not name:
        raise ValueError("matcher with an empty label name")
    pattern = None
    if kind in (RE, NRE):
        options = re2.Options()
        options.log_errors = False  # the error goes back to the client, not to stderr
        try:
            pattern = re2.compile(f"(?:{value})", options)
        except re2.error as exc:
            reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
            raise ValueError(f"matcher {name}{_SYMBOLS[kind]}{value!r}: invalid regex: {reason}") from exc
    return Matcher(kind, name, value, pattern)


def compile_matchers(messages: Iterable[Any]) -> tuple[Matcher, ...]:
    """prometheus.LabelMatcher messages -> Matchers."""
    return tuple(make_matcher(m.type, m.name, m.value) for m in messages)


def series_matches(matchers: Iterable[Matcher], name: str, labels: Mapping[str, str]) -> bool:
    for matcher in matchers:
        value = name if matcher.name == METRIC_NAME_LABEL else labels.get(matcher.name, "")
        if not matcher.matches(value):
            return False
    return True


def required_name(matchers: Iterable[Matcher]) -> str | None:
    """The metric name an equality matcher pins (used to prune row groups by the name column's statistics)."""
    for matcher in matchers:
        if matcher.name == METRIC_NAME_LABEL and matcher.kind == EQ and matcher.value:
            return matcher.value
    return None
