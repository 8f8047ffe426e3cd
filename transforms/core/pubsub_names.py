"""Pub/Sub resource names (topics, subscriptions): Google's rules, checked before any call is made.

A name is 3-255 characters, starts with a letter, holds only letters, digits and - . _ ~ % +, and does not
start with "goog". A project id here is letters, digits, hyphens, dots and colons (Google's own ids are
6-30 lower-case characters; the emulator takes any, so this check stays lenient there).
"""

from __future__ import annotations

import re

_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]*\Z")
_NAME_CHARS = re.compile(r"[A-Za-z0-9._~%+-]*\Z")


def problem(path: str | None, kind: str) -> str | None:
    """What is wrong with `path` as projects/PROJECT/{kind}s/NAME (kind: topic or subscription), or None."""
    form = f"projects/PROJECT/{kind}s/NAME"
    if not path:
        return f"is required, as {form}"
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != f"{kind}s":
        return f"{path!r} is not of the form {form}"
    project, name = parts[1], parts[3]
    if not _PROJECT.match(project):
        return f"{path!r}: project id {project!r} may hold only letters, digits, '-', '.' and ':'"
    if not 3 <= len(name) <= 255:
        return f"{path!r}: the {kind} name {name!r} has {len(name)} characters; Pub/Sub needs 3 to 255"
    if not name[0].isascii() or not name[0].isalpha():
        return f"{path!r}: the {kind} name {name!r} must start with a letter"
    bad = sorted({c for c in name if not _NAME_CHARS.match(c)})
    if bad:
        return (f"{path!r}: the {kind} name {name!r} holds {''.join(bad)!r}; allowed are letters, digits "
                "and - . _ ~ % +")
    if name.lower().startswith("goog"):
        return f"{path!r}: the {kind} name {name!r} must not start with 'goog'"
    return None
