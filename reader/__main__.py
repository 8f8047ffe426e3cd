"""`python -m reader`: parse options, then serve the Flask app under gunicorn."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from reader.config import parse_config
from reader.server import serve


def main() -> None:
    config = parse_config(sys.argv[1:])
    # prometheus_client reads this at import time, so set it before any worker imports metrics.
    own_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = tempfile.mkdtemp(prefix="reader-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    try:
        serve(config)
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
