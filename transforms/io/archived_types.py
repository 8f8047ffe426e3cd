"""Metric types remembered in the archive's metadata companion files (ARCHIVE/_metadata/...), read back when a
streaming worker starts: a sample arriving before its family's next metadata-only request (Prometheus sends one
a minute) is then typed as it was before the restart, not "unknown"."""

from __future__ import annotations

import logging

from apache_beam.io.filesystems import FileSystems

from transforms.core.archive.format import FORMATS, partition_parts
from transforms.core.archive.lines import hour_partition
from transforms.core.archive.records import METADATA_DIR
from transforms.io.files import read_whole

log = logging.getLogger(__name__)


def recent_types(archive_path: str, now_ms: int, hours: int = 2) -> dict[str, dict[str, str]]:
    """tenant -> {family: type} from the companion files of the last `hours` hours (the current one included),
    the latest record of each family winning. A file that cannot be read is logged and skipped: types are a
    refinement of the archive's lines, never a reason not to archive."""
    latest: dict[str, dict[str, tuple[int, str]]] = {}
    current = now_ms // 3_600_000
    for hour in range(current - hours + 1, current + 1):
        _, date, hour_part = partition_parts(hour_partition("*", hour))
        patterns = [FileSystems.join(archive_path, METADATA_DIR, "tenant=*", date, hour_part, fmt.glob())
                    for fmt in FORMATS.values()]
        try:
            paths = [m.path for result in FileSystems.match(patterns) for m in result.metadata_list]
        except Exception as exc:  # an archive not created yet, or a store that cannot be listed now
            log.warning("archived metadata types of hour %s not read: %s", hour, exc)
            continue
        for path in paths:
            fmt = next(f for f in FORMATS.values() if path.endswith(f.suffix))
            try:
                records = fmt.read_metadata(read_whole(path))
            except Exception as exc:
                log.warning("archived metadata types: skipping unreadable %s: %s: %s", path, type(exc).__name__, exc)
                continue
            tenant = next(part for part in path.split("/") if part.startswith("tenant="))[len("tenant="):]
            families = latest.setdefault(tenant, {})
            for record in records:
                if record.name not in families or record.ms >= families[record.name][0]:
                    families[record.name] = (record.ms, record.type)
    return {tenant: {name: kind for name, (_, kind) in families.items()} for tenant, families in latest.items()}
