"""Where a process's CPU goes: py-spy's raw (collapsed-stack) output, grouped by what runs.

Each sample is charged to its innermost Python frame (its "self" time): time in a C extension
(our compiled decode, zlib, gRPC's core) shows up under the Python function that called it. A
second view charges it to the innermost frame outside the standard library ("by caller"): a
thread wait, argparse or os.path then counts for the library or our code that asked for it.
py-spy records without --idle, so threads waiting on a lock, a socket or a sleep are mostly
left out and the shares approximate CPU time.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

# Our own code, by path inside the repository (most specific first).
OWN_GROUPS = (
    ("transforms/core/wire/", "our wire codec (compiled decode/encode)"),
    ("transforms/core/archive/", "our archive core (lines, Parquet)"),
    ("transforms/core/sink/", "our sink core (columns, requests)"),
    ("transforms/core/restore/", "our restore core"),
    ("transforms/core/", "our core (other)"),
    ("transforms/io/", "our I/O layer (Pub/Sub pull/ack, files, HTTP sink)"),
    ("transforms/beam/", "our Beam DoFns"),
    ("receiver/", "our receiver code"),
    ("pipeline/", "our pipeline code (loops, restore job)"),
)
# Installed distributions, by their top-level import package.
LIBRARY_GROUPS = {
    "gunicorn": "gunicorn",
    "flask": "Flask/Werkzeug", "werkzeug": "Flask/Werkzeug", "jinja2": "Flask/Werkzeug",
    "itsdangerous": "Flask/Werkzeug", "blinker": "Flask/Werkzeug", "click": "Flask/Werkzeug",
    "google": "Pub/Sub client + gRPC + protobuf", "grpc": "Pub/Sub client + gRPC + protobuf",
    "proto": "Pub/Sub client + gRPC + protobuf",
    "apache_beam": "Beam",
    "snappy": "snappy", "cramjam": "snappy",
    "requests": "HTTP client (requests/urllib3)", "urllib3": "HTTP client (requests/urllib3)",
    "charset_normalizer": "HTTP client (requests/urllib3)", "idna": "HTTP client (requests/urllib3)",
    "certifi": "HTTP client (requests/urllib3)",
    "prometheus_client": "metrics (prometheus_client)",
    "numpy": "numpy/pyarrow", "pyarrow": "numpy/pyarrow",
}
# Standard-library modules, by their top-level name.
STDLIB_GROUPS = {
    "threading": "threading + queues", "queue": "threading + queues", "concurrent": "threading + queues",
    "_threading_local": "threading + queues",
    "http": "HTTP + sockets (stdlib)", "socket": "HTTP + sockets (stdlib)", "socketserver": "HTTP + sockets (stdlib)",
    "selectors": "HTTP + sockets (stdlib)", "ssl": "HTTP + sockets (stdlib)", "email": "HTTP + sockets (stdlib)",
    "urllib": "HTTP + sockets (stdlib)",
    "gzip": "gzip/zlib", "zlib": "gzip/zlib", "_compression": "gzip/zlib",
    "json": "json", "logging": "logging", "pickle": "pickle", "copyreg": "pickle",
    "importlib": "imports", "zipimport": "imports",
    "os": "filesystem (os, os.path)", "genericpath": "filesystem (os, os.path)",
    "posixpath": "filesystem (os, os.path)", "shutil": "filesystem (os, os.path)",
    "tempfile": "filesystem (os, os.path)", "pathlib": "filesystem (os, os.path)",
    "argparse": "argparse + gettext", "gettext": "argparse + gettext",
}
NO_PYTHON_FRAME = "(no Python frame: native threads)"
FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*)\)$")
STDLIB_PATH = re.compile(r"/python3\.\d+/(?P<module>[^/]+?)(?:\.py)?(?:/|$)")


class ProfileFormatError(ValueError):
    """A line that is not py-spy's raw 'frame;frame;... count' format."""


@dataclass
class Profile:
    samples: int = 0
    groups: Counter[str] = field(default_factory=Counter)
    callers: Counter[str] = field(default_factory=Counter)
    functions: Counter[str] = field(default_factory=Counter)

    def shares(self, counter: Counter[str], top: int) -> list[tuple[str, float]]:
        return [(name, count / self.samples) for name, count in counter.most_common(top)] if self.samples else []


def parse_raw(text: str) -> list[tuple[list[str], int]]:
    """py-spy --format raw: one stack per line, outermost frame first, then a space and a count."""
    stacks = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            raise ProfileFormatError(f"line {number}: expected 'frame;frame;... COUNT', got {line[:80]!r}")
        stacks.append((stack.split(";"), int(count)))
    return stacks


def stdlib_module(path: str) -> str | None:
    """The standard-library module a frame's path belongs to ('threading', 'importlib'), else None."""
    if path.startswith("<frozen ") and path.endswith(">"):
        return path[len("<frozen "):-1].split(".", 1)[0]
    if "site-packages/" in path:
        return None
    stdlib = STDLIB_PATH.search(path)
    return stdlib["module"] if stdlib else None


def group_of(frame: str, root: str) -> str:
    """The group of one frame 'function (path)'; `root` is this repository's directory."""
    if frame.startswith("process "):
        return NO_PYTHON_FRAME  # only py-spy's 'process N:"command"' header: the stack has no Python frame
    match = FRAME.match(frame)
    if not match:
        return "other"
    path = match["path"]
    if "site-packages/" in path:
        package = path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
        return LIBRARY_GROUPS.get(package, f"library: {package}")
    relative = path[len(root):].lstrip("/") if root and path.startswith(root) else None
    if relative is not None:
        for prefix, group in OWN_GROUPS:
            if relative.startswith(prefix):
                return group
        return f"ours: {relative.split('/', 1)[0]}"
    module = stdlib_module(path)
    if module:
        return STDLIB_GROUPS.get(module, f"stdlib: {module}")
    return f"other: {path}"


def caller_group_of(frames: list[str], root: str) -> str:
    """The group of the innermost frame outside the standard library (the leaf's if there is none)."""
    for frame in reversed(frames):
        match = FRAME.match(frame)
        if match and not stdlib_module(match["path"]):
            return group_of(frame, root)
    return group_of(frames[-1], root)


def function_of(frame: str, root: str) -> str:
    """'function (short path)' for the top-functions list."""
    if frame.startswith("process "):
        return NO_PYTHON_FRAME
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match["path"]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif root and path.startswith(root):
        path = path[len(root):].lstrip("/")
    else:
        stdlib = STDLIB_PATH.search(path)
        path = path[stdlib.start("module"):] if stdlib else path
    return f"{match['function']} ({path})"


def summarize(stacks: list[tuple[list[str], int]], root: str) -> Profile:
    """Charge each stack's count to its innermost frame's group and function."""
    profile = Profile()
    for frames, count in stacks:
        leaf = frames[-1]
        profile.samples += count
        profile.groups[group_of(leaf, root)] += count
        profile.callers[caller_group_of(frames, root)] += count
        profile.functions[function_of(leaf, root)] += count
    return profile


def merge(profiles: list[Profile]) -> Profile:
    merged = Profile()
    for profile in profiles:
        merged.samples += profile.samples
        merged.groups.update(profile.groups)
        merged.callers.update(profile.callers)
        merged.functions.update(profile.functions)
    return merged
