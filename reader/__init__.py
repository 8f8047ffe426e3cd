"""Prometheus remote-read (POST /api/v1/read) over the Parquet archive."""
