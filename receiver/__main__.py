"""`python -m receiver`: parse options, then serve the Flask app under gunicorn."""

from __future__ import annotations

import os
import sys
import tempfile

from receiver.config import parse_config
from receiver.server import serve


def main() -> None:
    config = parse_config(sys.argv[1:])
    # prometheus_client reads this at import time, so set it before any worker imports metrics.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="receiver-metrics-"))
    serve(config)


if __name__ == "__main__":
    main()
