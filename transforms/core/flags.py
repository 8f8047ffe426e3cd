"""Command-line flag spelling: `--metrics-port` and `--metrics_port` name the same flag everywhere.

The receiver's flags are spelled with dashes, the pipeline's and restore's with underscores (Beam's
convention); each program rewrites the other spelling to its own before parsing.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence


def respell(argv: Sequence[str], separator: str, known: Collection[str]) -> list[str]:
    """Each `--flag-name[=value]` whose name, with - or _ turned into `separator`, is one of the `known` flags
    (without the dashes) is spelled so; other flags (Beam has a few dashed ones), values and everything after
    a bare `--` are left alone."""
    other = "_" if separator == "-" else "-"
    out: list[str] = []
    rest = False
    for arg in argv:
        if rest or arg == "--" or not arg.startswith("--"):
            rest = rest or arg == "--"
            out.append(arg)
            continue
        name, equals, value = arg[2:].partition("=")
        respelled = name.replace(other, separator)
        out.append("--" + (respelled if respelled in known else name) + equals + value)
    return out
