"""`python -m receiver`: parse options, then serve the Flask app under gunicorn."""

from __future__ import annotations

import sys

from receiver.config import parse_config
from receiver.server import serve, serve_with_shared_metrics


def main() -> None:
    serve_with_shared_metrics(serve, parse_config(sys.argv[1:]), "receiver")


if __name__ == "__main__":
    main()
