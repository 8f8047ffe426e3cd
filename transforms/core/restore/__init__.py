"""Restore: selecting archive partitions and turning their records into requests."""
