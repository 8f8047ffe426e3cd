"""The Beam job: Pub/Sub -> decode -> metric-to-log -> windowed archive files (local disk, GCS, S3)."""
