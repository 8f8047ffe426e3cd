"""Per-sink keep/drop rules, with Prometheus' `write_relabel_configs` semantics for these actions.

- keep / drop: join `source_labels` values with `separator`; keep (or drop) the series when the
  fully anchored `regex` matches. A missing label is the empty string, as in Prometheus.
- labeldrop / labelkeep: drop (or keep only) the labels whose *name* matches `regex`.
Rules apply in order; a dropped series stops there.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

ACTIONS = ("keep", "drop", "labeldrop", "labelkeep")
DEFAULT_SEPARATOR = ";"
DEFAULT_REGEX = "(.*)"


class RuleError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Rule:
    action: str
    regex: re.Pattern[str]
    source_labels: tuple[str, ...] = ("__name__",)
    separator: str = DEFAULT_SEPARATOR


def parse_rule(entry: Mapping[str, Any], where: str) -> Rule:
    if not isinstance(entry, Mapping):
        raise RuleError(f"{where}: a rule is a mapping with 'action' and 'regex'")
    unknown = sorted(set(entry) - {"action", "regex", "source_labels", "separator"})
    if unknown:
        raise RuleError(f"{where}: unknown field(s) {', '.join(unknown)} (supported actions: {', '.join(ACTIONS)})")
    action = str(entry.get("action", "")).lower()
    if action not in ACTIONS:
        raise RuleError(f"{where}: action must be one of {', '.join(ACTIONS)}, got {entry.get('action')!r}")
    try:
        regex = re.compile(f"(?:{entry.get('regex', DEFAULT_REGEX)})\\Z")  # anchored, as Prometheus does
    except re.error as exc:
        raise RuleError(f"{where}: bad regex {entry.get('regex')!r}: {exc}") from exc
    sources = entry.get("source_labels", ["__name__"])
    if action in ("keep", "drop") and (not isinstance(sources, list) or not sources):
        raise RuleError(f"{where}: {action} needs a non-empty source_labels list")
    return Rule(action, regex, tuple(str(s) for s in sources), str(entry.get("separator", DEFAULT_SEPARATOR)))


def apply_rules(rules: Sequence[Rule], labels: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """The series' labels after the rules, or None when a rule drops the series."""
    for rule in rules:
        if rule.action in ("keep", "drop"):
            values = dict(labels)
            joined = rule.separator.join(values.get(name, "") for name in rule.source_labels)
            matched = rule.regex.match(joined) is not None
            if matched != (rule.action == "keep"):
                return None
        elif rule.action == "labeldrop":
            labels = [(n, v) for n, v in labels if not rule.regex.match(n)]
        else:  # labelkeep; __name__ is kept like any other label only if it matches
            labels = [(n, v) for n, v in labels if rule.regex.match(n)]
    return labels
