"""Reading a secret (password, token) from a file: the one rule for the receiver and the sinks."""

from __future__ import annotations

from pathlib import Path


def read_secret_bytes(path: str) -> bytes:
    """The file's bytes without surrounding white space (editors and `echo` add a newline)."""
    return Path(path).read_bytes().strip()


def read_secret(path: str) -> str:
    return read_secret_bytes(path).decode("utf-8")
