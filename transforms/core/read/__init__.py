"""Prometheus remote-read over the archive: the pure part (requests, matchers, selection, encodings)."""
