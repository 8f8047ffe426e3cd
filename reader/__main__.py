"""`python -m reader`: parse options, then serve the Flask app under gunicorn."""

from __future__ import annotations

import sys

from reader.config import parse_config
from reader.server import serve
from receiver.server import serve_with_shared_metrics


def main() -> None:
    serve_with_shared_metrics(serve, parse_config(sys.argv[1:]), "reader")


if __name__ == "__main__":
    main()
