"""Archive formats (NDJSON, Parquet): records, lines, metadata companions."""
